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


def _start_and_kill_at(marker: Path, moment: str, step: int, args: list[str], cwd: Path) -> str:
    """Run train.py until the save of last.ckpt at `step` reaches `moment`, SIGKILL it; return the call stack
    it was frozen in."""
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
    stack = marker.read_text()
    marker.unlink()
    return stack


def _assert_in_the_real_save_path(stack: str, innermost: str) -> None:
    """Killed inside a real training run's own save: Lightning's fit loop -> ModelCheckpoint ->
    SafeCheckpointIO.save_checkpoint -> atomic_write -> `innermost` (torch.save writing, or os.replace)."""
    frames = [line.strip() for line in stack.splitlines() if line.strip().startswith("File ")]
    names = [frame.rsplit(", in ", 1)[-1] for frame in frames]
    checkpoint_io = [n for f, n in zip(frames, names, strict=True) if "fragment_llm/training/checkpoint_io.py" in f]
    assert "save_checkpoint,atomic_write" in ",".join(checkpoint_io), stack  # the one save path, called in order
    assert any("lightning/pytorch/callbacks/model_checkpoint.py" in f for f in frames), stack
    assert "fit" in names and innermost in names[names.index("atomic_write") :], stack


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
    stack = _start_and_kill_at(marker, "mid-write", 8, [*args, f"hydra.run.dir={run}"], cwd=tmp_path)
    _assert_in_the_real_save_path(stack, "write")
    assert _step_of(last) == 4
    assert list(last.parent.glob(".last.ckpt.tmp-*"))  # the half-written file never took last.ckpt's name

    # 2. Resumed, then killed just after the step-12 checkpoint landed, while training goes on. (A checkpoint
    # never chooses where data is read from: the corpus is named again on the command line.)
    again = [f"resume={run}", f"data.path={corpus}", f"hydra.run.dir={run}"]
    stack = _start_and_kill_at(marker, "after-rename", 12, again, cwd=tmp_path)
    _assert_in_the_real_save_path(stack, "watched_replace")
    assert _step_of(last) == 12
    assert not list(last.parent.glob(".*.tmp-*"))  # the resumed run removed the partial file

    # 3. Resumed to the end: the same losses, step for step, as the run that was never interrupted.
    done = run_train_script([f"resume={run}", f"data.path={corpus}"], cwd=tmp_path)  # Hydra finds the run itself
    assert done.returncode == 0, done.stderr[-3000:]
    assert _step_of(last) == 16
    expected, got = scalars(reference["run_dir"], "train/loss"), scalars(run, "train/loss")
    assert len(expected) == 16 and got == expected
    assert scalars(run, "val/loss") == scalars(reference["run_dir"], "val/loss")
