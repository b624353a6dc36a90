"""`python train.py -m ...`: one directory and TensorBoard run per job, a summary, and no DDP trap."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from tests.conftest import corpus_text
from tests.training_helpers import TINY, run_train_script, scalars


def test_a_two_job_sweep_writes_job_dirs_tensorboard_runs_and_a_summary(tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, f"data.path={corpus}", "trainer.max_steps=4", "trainer.val_check_interval=2"]
    proc = run_train_script([*args, "optimizer.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name.split("_")[0] for j in jobs] == ["0", "1"]
    assert [j.name for j in jobs] == ["0_optimizer.lr=0.001", "1_optimizer.lr=0.003"]  # named by what they sweep
    for job in jobs:
        assert (job / "checkpoints" / "last.ckpt").is_file()
        assert scalars(job, "val/loss") and scalars(job, "hp/best_val_loss")
        acc = EventAccumulator(str(job / "tensorboard"))
        acc.Reload()
        assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")  # the HPARAMS tab entry
        assert json.loads((job / "result.json").read_text())["status"] == "ok"

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    losses = [float(r["best_val_loss"]) for r in rows]
    assert losses == sorted(losses)  # best first
    assert sorted("optimizer.lr=0.001" in r["overrides"].split() for r in rows) == [False, True]
    assert "Sweep summary (2 jobs" in proc.stdout + proc.stderr


def test_a_sweep_job_asking_for_several_processes_is_refused_not_relaunched(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", f"hydra.sweep.dir={sweep}"]
    proc = run_train_script(args, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0  # the sweep itself completes; the job is reported as failed
    with open(sweep / "summary.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"].startswith("failed: trainer.devices=2") and "re-running the command line" in row["status"]
    assert "Traceback" not in proc.stderr


def test_optuna_preset_minimizes_the_best_val_loss_train_returns(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")  # the `sweep` extra; `make test` installs it
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    sweep = tmp_path / "sweep"
    searched = ("optimizer.lr=", "optimizer.weight_decay=", "optimizer.warmup_steps=", "model.dropout=")
    fixed = [a for a in TINY if not a.startswith(searched)]  # leave the search space to Optuna
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *fixed, f"data.path={corpus}"]
    proc = run_train_script(
        [*args, "trainer.max_steps=4", "trainer.val_check_interval=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert all("optimizer.lr=" in r["overrides"] and "model.dropout=" in r["overrides"] for r in rows)  # sampled
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(float(r["best_val_loss"]) for r in rows))
    assert set(results["best_params"]) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "optimizer.warmup_steps",
        "model.dropout",
    }
