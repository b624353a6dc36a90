"""Loading checkpoints safely, the Python API, prompt validation, settings checks, `generate.py`."""

import io
import logging
import os

import pytest
import torch
from hydra.errors import ConfigCompositionException

from fragment_llm import load_model
from fragment_llm.data.tokenizer import EOT_TOKEN
from fragment_llm.errors import CheckpointError, ConfigError, PromptError, TokenizerError
from fragment_llm.inference import find_latest_checkpoint
from fragment_llm.inference.cli import SAMPLE_SEPARATOR, run_generate
from fragment_llm.inference.loading import resolve_device, resolve_precision
from tests.conftest import REPO_ROOT, compose_config, run_python
from tests.inference_helpers import char_tokenizer, save_checkpoint


def n_tokens(text: str) -> int:
    """Tokens in a character-level text; <|endoftext|> is one."""
    return len(text.replace(EOT_TOKEN, "_"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("run") / "checkpoints" / "last.ckpt", char_tokenizer())


@pytest.fixture(scope="module")
def lm(ckpt):
    return load_model(ckpt, device="cpu")


def test_generate_returns_text_and_stream_yields_it(lm):
    text = lm.generate("abc", max_new_tokens=8, temperature=0, stop_at_eot=False)
    assert isinstance(text, str) and text.startswith("abc") and n_tokens(text) == 3 + 8
    kw = dict(max_new_tokens=20, temperature=1.0, seed=5, stop_at_eot=False)
    assert lm.generate("abc", **kw) == "abc" + "".join(lm.stream("abc", **kw))
    samples = lm.generate("abc", num_samples=3, **kw)
    assert isinstance(samples, list) and len(samples) == 3 and all(s.startswith("abc") for s in samples)
    assert samples == lm.generate("abc", num_samples=3, **kw)  # a seed reproduces the batch
    assert (
        n_tokens(lm.generate(None, max_new_tokens=5, stop_at_eot=False)) == 5
    )  # the <|endoftext|> context is not text
    with pytest.raises(TypeError, match="temprature"):
        lm.generate("abc", temprature=0.5)


def test_cached_and_uncached_generation_agree_through_the_api(lm):
    kw = dict(max_new_tokens=40, temperature=0, stop_at_eot=False)  # 40 tokens: well past block_size=16
    assert lm.generate("abc", **kw) == lm.generate("abc", use_kv_cache=False, **kw)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("temperature", -0.5, "temperature=-0.5: must be >= 0"),
        ("temperature", float("nan"), "temperature=nan: must be >= 0"),
        ("top_k", -1, "top_k=-1: must be >= 0"),
        ("top_p", 0.0, "top_p=0.0: must be in \\(0, 1\\]"),
        ("top_p", 1.5, "top_p=1.5"),
        ("repetition_penalty", 0.0, "repetition_penalty=0.0: must be > 0"),
        ("max_new_tokens", -1, "max_new_tokens=-1"),
        ("stop", [""], "stop=\\[''\\]: must be a list of non-empty strings"),
        ("overflow", "wrap", "overflow='wrap': must be one of slide, stop"),
        ("slide_tokens", 0, "slide_tokens=0"),
    ],
)
def test_invalid_settings_are_refused_before_any_work(tmp_path, key, value, message):
    cfg = compose_config("generate", [f"ckpt={tmp_path}/missing.ckpt"])
    cfg[key] = value
    with pytest.raises(PromptError, match=message):
        run_generate(cfg)  # fails on the setting, not on the missing checkpoint


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("num_samples=0", PromptError, "num_samples=0: must be >= 1"),
        ("device=tpu", ConfigError, "device='tpu': not a device"),
        ("precision=fp8", ConfigError, "precision='fp8': not known"),
        ("max_prompt_chars=0", ConfigError, "max_prompt_chars=0"),
    ],
)
def test_invalid_run_settings_are_refused_before_any_work(tmp_path, override, error, message):
    with pytest.raises(error, match=message):
        run_generate(compose_config("generate", [f"ckpt={tmp_path}/missing.ckpt", override]))


def test_prompt_validation(lm, caplog):
    for empty in ("", "   ", "\x00\x07"):
        with pytest.raises(PromptError, match="prompt is empty"):
            lm.generate(empty)
    with caplog.at_level(logging.WARNING):
        text = lm.generate("ab\x1b\x00c\r\nd", max_new_tokens=2, temperature=0)
    assert text.startswith("abc\nd") and "removed 2 control character(s)" in caplog.text
    with pytest.raises(PromptError, match="max_prompt_chars"):
        load_model(lm.checkpoint_path, device="cpu", max_prompt_chars=10).generate("a" * 11)
    with pytest.raises(PromptError, match="max_prompt_tokens"):
        load_model(lm.checkpoint_path, device="cpu", max_prompt_tokens=5).generate("abcdef")
    with pytest.raises(TokenizerError, match="'Z' is not in this character-level vocabulary"):
        lm.generate("Zebra")


def test_prompt_longer_than_the_context(lm, caplog):
    long_prompt = "abcdefghij" * 4  # 40 tokens, context 16
    with caplog.at_level(logging.WARNING):
        text = lm.generate(long_prompt, max_new_tokens=5, temperature=0, stop_at_eot=False)
    assert text.startswith(long_prompt) and n_tokens(text) == 45 and "longer than the model's context" in caplog.text
    with pytest.raises(PromptError, match="overflow=stop nothing could be generated"):
        lm.generate(long_prompt, overflow="stop")


def test_pickle_payload_in_a_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(evil)
    assert not marker.exists()


def test_mismatched_tokenizer_is_refused(tmp_path):
    tok = char_tokenizer()
    path = save_checkpoint(tmp_path / "c.ckpt", tok, vocab_size=tok.vocab_size + 5)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_model(path)


def test_garbage_and_missing_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_model(tmp_path / "missing.ckpt")
    torch.save([1, 2, 3], tmp_path / "list.ckpt")
    with pytest.raises(CheckpointError, match="not a Fragment_LLM training checkpoint"):
        load_model(tmp_path / "list.ckpt")


def test_a_compiled_models_checkpoint_loads(tmp_path, ckpt, lm):
    data = torch.load(ckpt, weights_only=True)
    data["state_dict"] = {k.replace("model.", "model._orig_mod.", 1): v for k, v in data["state_dict"].items()}
    torch.save(data, tmp_path / "compiled.ckpt")
    kw = dict(max_new_tokens=10, temperature=0)
    assert load_model(tmp_path / "compiled.ckpt").generate("abc", **kw) == lm.generate("abc", **kw)


def test_newest_run_is_found_and_links_out_of_the_folder_are_ignored(tmp_path):
    tok = char_tokenizer()
    old = save_checkpoint(tmp_path / "train" / "a" / "checkpoints" / "last.ckpt", tok)
    new = save_checkpoint(tmp_path / "train" / "multirun" / "x" / "0" / "checkpoints" / "last.ckpt", tok)
    os.utime(old, ns=(1, 1))
    assert find_latest_checkpoint(tmp_path / "train") == new
    outside = save_checkpoint(tmp_path / "elsewhere" / "checkpoints" / "last.ckpt", tok)
    (tmp_path / "train" / "linked").symlink_to(outside.parent.parent, target_is_directory=True)
    assert find_latest_checkpoint(tmp_path / "train") == new
    with pytest.raises(CheckpointError, match="no trained run"):
        find_latest_checkpoint(tmp_path / "empty")


def test_device_and_precision_choice(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("bfloat16", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_precision("auto", torch.device("mps")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")  # CUDA first
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Some GPU")
    for capability, dtype in (((8, 0), torch.bfloat16), ((7, 0), torch.float16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_, c=capability: c)
        assert resolve_precision("auto", torch.device("cuda")) == dtype


def test_half_precision_generation_runs(ckpt):
    lm = load_model(ckpt, device="cpu", precision="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert n_tokens(lm.generate("abc", max_new_tokens=20, stop_at_eot=False, seed=0)) == 23


def test_generate_config_has_every_key_and_refuses_typos():
    cfg = compose_config("generate")
    for key in ("top_p", "repetition_penalty", "stop", "num_samples", "stream", "interactive", "device"):
        assert key in cfg
    assert cfg.use_kv_cache is True and cfg.device == "auto" and list(cfg.stop) == []
    cfg = compose_config("generate", ['stop=["\n\n","THE END"]', "top_k=null"])
    assert list(cfg.stop) == ["\n\n", "THE END"] and cfg.top_k is None
    with pytest.raises(ConfigCompositionException):
        compose_config("generate", ["top_q=0.9"])


def test_run_generate_streams_prompt_and_continuation(ckpt, lm, caplog):
    out = io.StringIO()
    with caplog.at_level(logging.INFO):
        run_generate(compose_config("generate", [f"ckpt={ckpt}", "prompt=abc", "max_new_tokens=12"]), out)
    assert out.getvalue() == lm.generate("abc", max_new_tokens=12, seed=1337, top_k=200) + "\n"
    assert "tokens/s, KV cache on" in caplog.text
    out = io.StringIO()
    run_generate(compose_config("generate", [f"ckpt={ckpt}", "prompt=abc", "num_samples=3"]), out)
    samples = out.getvalue().rstrip("\n").split(f"\n{SAMPLE_SEPARATOR}\n")
    assert len(samples) == 3 and all(s.startswith("abc") for s in samples)


def _generate_py(*args, stdin=None):
    return run_python([str(REPO_ROOT / "generate.py"), *args], input=stdin, timeout=120)


def test_generate_py_as_a_user_runs_it(ckpt):
    ok = _generate_py(f"ckpt={ckpt}", "prompt=abc", "max_new_tokens=10", "temperature=0", "stop_at_eot=false")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("abc") and n_tokens(ok.stdout) == len("abc") + 10 + 1  # and a newline
    assert "Loaded" in ok.stderr and "tokens/s" in ok.stderr  # logs go to stderr, text to stdout
    bad = _generate_py(f"ckpt={ckpt}", "top_p=2")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "error: top_p=2.0: must be in (0, 1] (1 disables nucleus sampling)"
    )
