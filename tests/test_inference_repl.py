"""Interactive mode: commands, streamed answers, Ctrl-C stopping a generation but not the session."""

import io
import os
import select
import signal
import sys
import time

import pytest

from fragment_llm import load_model
from fragment_llm.inference.api import sampling_config
from fragment_llm.inference.repl import Repl
from tests.conftest import REPO_ROOT
from tests.inference_helpers import char_tokenizer, save_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "last.ckpt", char_tokenizer())


def scripted(*items):
    """A read_line that replays `items` (an exception item is raised) and then signals end of input."""
    queue = list(items)

    def read_line(prompt: str) -> str:
        if not queue:
            raise EOFError
        item = queue.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return read_line


class InterruptingOutput(io.StringIO):
    """Raises KeyboardInterrupt, once, on the n-th write: Ctrl-C in the middle of a streamed answer."""

    def __init__(self, after_writes: int) -> None:
        super().__init__()
        self.countdown = after_writes

    def write(self, text: str) -> int:
        self.countdown -= 1
        if self.countdown == 0:
            raise KeyboardInterrupt
        return super().write(text)


def test_commands_change_settings_and_answers_stream(ckpt):
    lm = load_model(ckpt, device="cpu")
    out = io.StringIO()
    repl = Repl(
        lm,
        sampling_config(max_new_tokens=50, seed=0, stop_at_eot=False),
        out=out,
        read_line=scripted(
            "/temp 0",
            "/top_k 5",
            "/top_p 0.9",
            "/max 6",
            "/rep 1.2",
            "/temp -1",  # refused, the setting stays
            "/top_k many",
            "/frobnicate",
            KeyboardInterrupt(),  # Ctrl-C at the prompt: the session goes on
            "/settings",
            "",
            "ab\\",  # continued on the next line
            "c",
            "/help",
            "/quit",
            "never read",
        ),
    )
    repl.run()
    text = out.getvalue()
    for expected in (
        "temperature = 0.0",
        "top_k = 5",
        "top_p = 0.9",
        "max_new_tokens = 6",
        "repetition_penalty = 1.2",
        "error: /temp -1: temperature=-1.0: must be >= 0",
        "error: /top_k many: invalid literal",
        "unknown command /frobnicate",
        "/quit or Ctrl-D leaves",
        "temperature=0.0  top_k=5  top_p=0.9  max_new_tokens=6  repetition_penalty=1.2",
        "Ctrl-C stops the current generation",
    ):
        assert expected in text
    answer = lm.generate("ab\nc", max_new_tokens=6, temperature=0, repetition_penalty=1.2, stop_at_eot=False)
    assert answer[len("ab\nc") :] + "\n" in text
    assert repl.settings.temperature == 0.0  # the refused value did not stick


def test_ctrl_c_stops_the_answer_not_the_session(ckpt):
    lm = load_model(ckpt, device="cpu")
    out = InterruptingOutput(after_writes=5)
    Repl(
        lm,
        sampling_config(max_new_tokens=10_000, stop_at_eot=False),
        out=out,
        read_line=scripted("abc", "/max 3", "abc"),
    ).run()
    text = out.getvalue()
    assert "[stopped]" in text and "max_new_tokens = 3" in text
    second = text.split("max_new_tokens = 3\n", 1)[1]
    answer = second.removesuffix("\n\n")  # the answer's own line end, then the one printed at end of input
    assert len(answer.replace("<|endoftext|>", "_")) == 3  # the next answer runs normally (it may hold "\n")


def test_errors_are_one_line_and_the_session_continues(ckpt):
    lm = load_model(ckpt, device="cpu")
    out = io.StringIO()
    Repl(lm, sampling_config(max_new_tokens=2), out=out, read_line=scripted("Zebra", "abc")).run()
    lines = out.getvalue().splitlines()
    assert any(line.startswith("error: character 'Z' is not in this character-level vocabulary") for line in lines)
    assert len(lines) >= 3  # banner, the error, the answer to "abc"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_repl_in_a_terminal_with_a_real_ctrl_c(ckpt):
    """generate.py interactive=true under a pseudo-terminal: type, interrupt with ^C, change a setting, quit."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: generate.py with the pty as its controlling terminal
        # A shell's background job (`cmd &`) starts with SIGINT ignored, and Python keeps an ignored SIGINT
        # ignored: restore the default, so the child gets KeyboardInterrupt as a user's generate.py does.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.environ.update(PYTHONPATH=str(REPO_ROOT), HYDRA_FULL_ERROR="0")
        args = [f"ckpt={ckpt}", "interactive=true", "max_new_tokens=1000000", "stop_at_eot=false", "seed=0"]
        os.execv(sys.executable, [sys.executable, str(REPO_ROOT / "generate.py"), *args])
    seen = ""

    def expect(pattern: str, timeout: float = 60.0) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while pattern not in seen:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"timed out waiting for {pattern!r}; output so far:\n{seen}")
            seen += os.read(fd, 4096).decode("utf-8", "replace")
        seen = seen[seen.index(pattern) + len(pattern) :]

    try:
        expect(">>> ")
        os.write(fd, b"abc\r")
        time.sleep(1.0)  # let the answer stream for a while
        os.write(fd, b"\x03")  # Ctrl-C, delivered by the terminal as SIGINT
        expect("[stopped]")
        expect(">>> ")
        os.write(fd, b"/max 4\r")
        expect("max_new_tokens = 4")
        os.write(fd, b"/quit\r")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
