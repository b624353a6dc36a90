"""The first hour of a new user: `python train.py data.path=book.txt`, as typed, and what the console shows."""

import hashlib
import json
import logging
import re
import shlex
from pathlib import Path

import pytest

from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.inference import load_model
from fragment_llm.training.run_lock import LOCK_FILE
from fragment_llm.training.run_record import RECORD_FILE, git_state
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


def test_the_run_records_what_produced_it_and_its_checkpoints_carry_the_record(first_run, caplog):
    _, run = first_run
    record = json.loads((run / RECORD_FILE).read_text())
    assert record["argv"][1:] == ["data.path=book.txt", *FAST, "trainer.precision=bf16-mixed",
                                  "trainer.enable_model_summary=true"]  # fmt: skip
    assert record["command"].endswith(shlex.join(record["argv"])) and record["run_dir"] == str(run)
    assert record["git"] == git_state(REPO_ROOT)  # {"commit", "dirty"} in a checkout, None elsewhere
    assert all(record["versions"][name] for name in ("python", "torch", "lightning", "hydra-core", "fragment_llm"))
    machine = record["machine"]
    assert machine["cpu"] and machine["cpus"] >= 1 and machine["torch_threads"] >= 1 and machine["host"]
    assert "gpu" in machine and record["training"] == {"precision": "bf16-mixed", "processes": 1}
    data = record["data"]
    manifest = Path(data["cache"]) / "manifest.json"
    assert data["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    book = run.parent.parent.parent / "book.txt"
    assert data["sources"] == [{"path": str(book.resolve()), "size": book.stat().st_size,
                                "sha256": hashlib.sha256(book.read_bytes()).hexdigest()}]  # fmt: skip
    assert Path(data["report"]).is_file() and record["earlier_sessions"] == []

    ckpt = load_checkpoint_safely(run / "checkpoints" / "last.ckpt")  # weights_only=True still loads it
    assert ckpt["run_record"] == {k: v for k, v in record.items() if k != "earlier_sessions"}
    with caplog.at_level(logging.INFO):  # generate.py says which run and commit it samples from
        load_model(run, device="cpu")
    commit = f"commit {record['git']['commit'][:12]}" if record["git"] else "no git commit recorded"
    assert f"trained in {run} ({commit}" in caplog.text and "data.path=book.txt" in caplog.text
