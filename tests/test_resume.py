"""Resuming is exact, checkpoints are data only, and no run overwrites another."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from fragment_llm.errors import CheckpointError, ConfigError, TrainingError
from fragment_llm.model.gpt import GPT
from fragment_llm.training.checkpoint_io import load_checkpoint_safely
from fragment_llm.training.run import train
from tests.conftest import compose_train, corpus_text
from tests.training_helpers import TINY, run_train_script, scalars


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(corpus_text(40_000), encoding="utf-8")
    return path


def _train(root: Path, corpus: Path, *overrides: str) -> dict:
    return train(compose_train(root, [*TINY, f"data.path={corpus}", *overrides]))


def _weights(ckpt: str) -> dict[str, torch.Tensor]:
    return load_checkpoint_safely(ckpt)["state_dict"]


def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path, corpus):
    """Stops at step 8 (a validation), 10 (an epoch's end) and 13 (mid-epoch, between validations), with
    dropout on and epochs of 10 batches: every resumed step must reproduce the uninterrupted run bit for bit."""
    full = _train(tmp_path / "full", corpus, "trainer.max_steps=16")
    part = tmp_path / "part"
    runs = [_train(part, corpus, "trainer.max_steps=8")]
    for steps in (10, 13, 16):
        # Event files are named <seconds>.<host>.<pid>.<counter> and read in name order; in one pytest process a
        # resume in the same second can sort before its predecessor (".10" < ".9"), so start each in a new second.
        time.sleep(1.05)
        runs.append(_train(part, corpus, f"trainer.max_steps={steps}", "ckpt_path=last"))

    assert [r["global_step"] for r in runs] == [8, 10, 13, 16]
    assert {r["resumed_from"] for r in runs[1:]} == {str(part / "run" / "checkpoints" / "last.ckpt")}
    assert {r["run_dir"] for r in runs} == {str(part / "run")}  # one run, one directory, one TensorBoard log
    for tag in ("train/loss", "val/loss", "train/lr", "train/grad_norm"):
        expected, got = scalars(full["run_dir"], tag), scalars(part / "run", tag)
        assert len(expected) >= 3 and got == expected, tag  # exact: same data order, dropout masks, LR
    final_full, final_resumed = _weights(full["last_ckpt"]), _weights(runs[-1]["last_ckpt"])
    assert all(torch.equal(final_full[k], final_resumed[k]) for k in final_full)


def test_a_muon_run_with_the_modern_architecture_resumes_bit_exactly(tmp_path, corpus):
    """Muon's momentum buffers, NorMuon's neuron moments and the momentum warm-up, AdamW's moments and the wsd
    schedule all come back from the checkpoint (arch=modern: smear and the embedding skip too)."""
    muon = ["arch=modern", "optimizer=muon", "optimizer.warmup_steps=2", "optimizer.momentum_warmup_steps=8",
            "optimizer.neuron_norm=true", "optimizer.ns_precondition=aol", "optimizer.ns_steps=3"]  # fmt: skip
    full = _train(tmp_path / "full", corpus, *muon, "trainer.max_steps=12")
    part = tmp_path / "part"
    _train(part, corpus, *muon, "trainer.max_steps=7")
    time.sleep(1.05)  # a new event file name (see above)
    resumed = _train(part, corpus, *muon, "trainer.max_steps=12", "ckpt_path=last")
    for tag in ("train/loss", "train/lr", "train/grad_norm"):
        expected = scalars(full["run_dir"], tag)
        assert len(expected) == 12 and scalars(part / "run", tag) == expected, tag
    final_full, final_resumed = _weights(full["last_ckpt"]), _weights(resumed["last_ckpt"])
    assert all(torch.equal(final_full[k], final_resumed[k]) for k in final_full)
    optimizer = load_checkpoint_safely(resumed["last_ckpt"])["optimizer_states"][0]
    assert optimizer["param_groups"][0]["kind"] == "muon" and optimizer["param_groups"][0]["momentum"] == 0.95
    first_matrix = optimizer["param_groups"][0]["params"][0]
    assert {"momentum_buffer", "neuron_second_moment"} <= optimizer["state"][first_matrix].keys()


def test_checkpoint_holds_plain_data_and_the_runs_settings(tmp_path, corpus):
    result = _train(tmp_path, corpus, "trainer.max_steps=8")
    ckpt = load_checkpoint_safely(result["last_ckpt"])  # weights_only=True
    hp = ckpt["hyper_parameters"]
    assert hp["model"]["n_layer"] == 2 and hp["run_config"]["model"]["dropout"] == 0.1
    assert hp["run_config"]["trainer"]["max_steps"] == 8 and "ckpt_path" not in hp["run_config"]
    sampler = ckpt["TextDataModule"]["sampler"]
    assert sampler == {"seed": 1337, "samples_consumed": 8 * 8}
    assert set(ckpt["callbacks"]["CarryRNGState"]["rng"]) == {"torch", "numpy", "python"}


def test_a_checkpoint_carrying_a_pickle_payload_is_refused(tmp_path, corpus):
    class Payload:
        def __reduce__(self):  # unpickling this would run os.mkdir(evidence)
            return (os.mkdir, (str(tmp_path / "payload-ran"),))

    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "global_step": 3, "trap": Payload()}, crafted)
    with pytest.raises(CheckpointError, match="refused to load"):
        _train(tmp_path, corpus, f"ckpt_path={crafted}")
    proc = run_train_script([f"ckpt_path={crafted}"], cwd=tmp_path)  # as a user runs it
    assert proc.returncode == 2 and "refused to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "payload-ran").exists()


def _poison_training_batch(monkeypatch, n: int) -> None:
    """The loss of the n-th training batch (counted from 1) becomes NaN."""
    forward = GPT.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None, **kwargs):
        logits, loss = forward(self, idx, targets, **kwargs)
        if self.training:
            calls["n"] += 1
            if calls["n"] == n:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", poisoned)


@pytest.mark.parametrize(
    ("log_every", "named"),
    [
        ("1", "at step 11"),  # checked every step: the step itself, before its backward
        ("5", "at a step between 11 and 15"),  # checked on logging steps only: the window since the last check
        ("50", "at a step between 9 and 16"),  # no logging step before the validation at 16: checked there
    ],
)
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, corpus, monkeypatch, log_every, named
):
    _poison_training_batch(monkeypatch, 11)
    with pytest.raises(TrainingError, match=rf"train/loss is nan {named}; training stopped") as exc:
        _train(tmp_path, corpus, "trainer.max_steps=24", f"trainer.log_every_n_steps={log_every}")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert str(last) in str(exc.value)
    ckpt = load_checkpoint_safely(last)
    assert ckpt["global_step"] == 8  # from the validation before the failure
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_a_non_finite_loss_never_reaches_the_final_checkpoint(tmp_path, corpus, monkeypatch):
    _poison_training_batch(monkeypatch, 11)  # after the last validation (8), before the end (12), no logging step
    with pytest.raises(TrainingError, match=r"train/loss is nan at a step between 9 and 12"):
        _train(tmp_path, corpus, "trainer.max_steps=12", "trainer.log_every_n_steps=50")
    assert load_checkpoint_safely(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 8


def test_a_new_run_never_overwrites_an_existing_one(tmp_path, corpus):
    _train(tmp_path, corpus, "trainer.max_steps=8")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = (last.stat().st_mtime_ns, last.read_bytes())
    with pytest.raises(ConfigError, match="already holds a run"):
        _train(tmp_path, corpus, "trainer.max_steps=8")
    assert (last.stat().st_mtime_ns, last.read_bytes()) == before

    # From the command line, into that directory: refused, and Hydra's record of the first run is kept.
    record = tmp_path / "run" / ".hydra" / "overrides.yaml"
    record.parent.mkdir()
    record.write_text("- the first run's overrides\n")
    (record.parent / "config.yaml").write_text("the first run's config\n")
    args = [*TINY, f"data.path={corpus}", "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'run'}"]
    again = run_train_script(args, cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
    assert record.read_text() == "- the first run's overrides\n"
    assert (last.stat().st_mtime_ns, last.read_bytes()) == before


def test_resume_errors_are_one_clear_line(tmp_path, corpus):
    with pytest.raises(CheckpointError, match="ckpt_path=last: found no run"):
        _train(tmp_path, corpus, "ckpt_path=last")
    with pytest.raises(CheckpointError, match="no checkpoints/last.ckpt there"):
        _train(tmp_path, corpus, f"resume={tmp_path}")
    _train(tmp_path, corpus, "trainer.max_steps=2")
    with pytest.raises(CheckpointError, match="different model"):
        _train(tmp_path, corpus, "ckpt_path=last", "model.n_embd=64")
