"""Shared by the training tests: tiny settings, reading TensorBoard logs, running train.py as a user does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT, compose_train, corpus_text, run_python

# Character tokenizer (no BPE training), a 2-layer model, 10-batch epochs: seconds per run,
# yet with dropout (exercises RNG state) and epoch boundaries (exercises the sampler position).
TINY = [
    "data=text",
    "tokenizer=char",
    "model=tiny",
    "model.dropout=0.1",
    "data.batch_size=8",
    "optimizer.lr=3e-3",
    "optimizer.warmup_steps=4",
    "optimizer.decay_steps=24",
    "trainer.val_check_interval=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_train_batches=10",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.samples.max_new_tokens=16",
]


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    """step -> value of a scalar in a run's TensorBoard logs, as TensorBoard shows it (purged data removed)."""
    acc = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)} if tag in acc.Tags()["scalars"] else {}


def run_train_script(args: list[str], cwd: Path, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    return run_python([str(REPO_ROOT / "train.py"), *args], cwd, timeout, **popen)


def train_tiny_run(root: Path) -> tuple[Path, Path]:
    """A tiny real run in `root` (its corpus, its run directory), trained for 2 steps."""
    from fragment_llm.training.run import train

    corpus = root / "input.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    train(compose_train(root, [*TINY, f"data.path={corpus}", "trainer.max_steps=2"]))
    return corpus, root / "run"
