"""A run killed with SIGKILL, even while writing a checkpoint, resumes from its last good one, exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fragment_llm.training.checkpoint_io import load_checkpoint_safely
from fragment_llm.training.run import train
from tests.conftest import REPO_ROOT, compose_train, corpus_text
from tests.training_helpers import TINY, run_train_script, scalars

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

STEPS = ["trainer.max_steps=16", "trainer.val_check_interval=4"]  # a checkpoint every 4 steps


def _start_and_kill_at(marker: Path, moment: str, step: int, args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "kill_driver.py"), str(marker), moment, str(step), *args]
    log = marker.with_suffix(".stderr")  # a file, not a pipe: a full pipe nobody reads would stall the run
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"training exited before reaching the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training never reached the kill point")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    marker.unlink()


def _step_of(ckpt: Path) -> int:
    return load_checkpoint_safely(ckpt)["global_step"]  # weights_only=True: the file is whole and plain


def test_sigkill_during_and_after_a_save_then_resume_matches_an_uninterrupted_run(tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(40_000), encoding="utf-8")
    args = [*TINY, f"data.path={corpus}", *STEPS]
    reference = train(compose_train(tmp_path / "reference", args))

    run = tmp_path / "killed"
    last, marker = run / "checkpoints" / "last.ckpt", tmp_path / "frozen"
    # 1. Killed half-way through writing the step-8 checkpoint: the step-4 one is intact.
    _start_and_kill_at(marker, "mid-write", 8, [*args, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert _step_of(last) == 4
    assert list(last.parent.glob(".last.ckpt.tmp-*"))  # the half-written file never took last.ckpt's name

    # 2. Resumed, then killed just after the step-12 checkpoint landed, while training goes on.
    _start_and_kill_at(marker, "after-rename", 12, [f"resume={run}", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert _step_of(last) == 12
    assert not list(last.parent.glob(".*.tmp-*"))  # the resumed run removed the partial file

    # 3. Resumed to the end: the same losses, step for step, as the run that was never interrupted.
    done = run_train_script([f"resume={run}"], cwd=tmp_path)  # Hydra finds the run directory itself
    assert done.returncode == 0, done.stderr[-3000:]
    assert _step_of(last) == 16
    expected, got = scalars(reference["run_dir"], "train/loss"), scalars(run, "train/loss")
    assert len(expected) == 16 and got == expected
    assert scalars(run, "val/loss") == scalars(reference["run_dir"], "val/loss")
