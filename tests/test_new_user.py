"""The first hour of a new user: `python train.py data.path=book.txt`, as typed, and what the console shows."""

import re

import pytest

from fragment_llm.training.run_lock import LOCK_FILE
from tests.conftest import REPO_ROOT, corpus_text, run_python

FAST = [
    "model=tiny",
    "tokenizer.vocab_size=300",
    "data.batch_size=8",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "callbacks.samples.max_new_tokens=8",
]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The default data group (the stdlib's .py files) with a .txt file named on the command line, under bf16
    with Lightning's model summary on: the settings that used to fail or print warnings."""
    cwd = tmp_path_factory.mktemp("new_user")
    (cwd / "book.txt").write_text(corpus_text(60_000), encoding="utf-8")
    args = ["data.path=book.txt", *FAST, "trainer.precision=bf16-mixed", "trainer.enable_model_summary=true"]
    proc = run_python([str(REPO_ROOT / "train.py"), *args], cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (cwd / "outputs" / "train").iterdir()
    return proc, run


def test_a_file_named_on_the_command_line_trains_with_the_default_data_group(first_run):
    _, run = first_run
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "book.txt" in (run / "config.yaml").read_text()
    assert not (run / LOCK_FILE).exists()  # the run's lock is released at the end


def test_stdout_holds_only_the_results_and_stderr_the_logs_without_tips_or_warnings(first_run):
    proc, run = first_run
    assert proc.stdout.strip().splitlines() == [
        f"Run directory: {run}",
        f"Sample from it: python generate.py ckpt={run}/checkpoints/last.ckpt",
        f"Continue it:    python train.py resume={run}",
    ]
    logs = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert any(re.fullmatch(r"\[\d\d:\d\d:\d\d\]\[INFO\] Data: .* tokens, vocabulary \d+ \(bpe\)", x) for x in logs)
    assert any(line.endswith("Total params") for line in proc.stderr.splitlines())  # the summary, in the log
    noise = ("litlogger", "litmodels", "tip:", "warning", "tpu available", "not supported by the model summary")
    assert not [word for word in noise if word in proc.stderr.lower()]
    assert "Initial val/loss" in (run / "train.log").read_text()  # the log file has what stderr had
