"""Crafted plain state in a checkpoint (counters, seeds, generator states, loop progress) is refused in one line
naming the file and the field, before Lightning, numpy or torch read it; an honest checkpoint still resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.data.datamodule import TextDataModule
from fragment_llm.errors import CheckpointError
from fragment_llm.training.rng import CarryRNGState
from fragment_llm.training.run import train
from tests.conftest import compose_train
from tests.training_helpers import TINY, train_tiny_run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny real run (its corpus, its last.ckpt), trained for 2 steps."""
    corpus, run_dir = train_tiny_run(tmp_path_factory.mktemp("real"))
    return corpus, run_dir / "checkpoints" / "last.ckpt"


def _fit_loop(c):
    return c["loops"]["fit_loop"]


def _rng(c):
    return c["callbacks"]["CarryRNGState"]["rng"]


CRAFTED = {  # field named in the refusal -> how the checkpoint is changed
    "TextDataModule.sampler.seed": lambda c: c["TextDataModule"]["sampler"].update(seed="1337"),
    "TextDataModule.sampler.samples_consumed": lambda c: c["TextDataModule"]["sampler"].update(samples_consumed=-8),
    "global_step": lambda c: c.update(global_step=2**60),
    "pytorch-lightning_version": lambda c: c.update({"pytorch-lightning_version": "junk; rm -rf"}),
    "hyper_parameters.run_config": lambda c: c["hyper_parameters"].update(run_config=["junk"]),
    "callbacks.TextSamples.validations": lambda c: c["callbacks"]["TextSamples"].update(validations="2"),
    "optimizer_states": lambda c: c.update(optimizer_states="junk"),
    # Muon's options come back from the file (torch restores a group's hyperparameters): none may hang or crash it.
    "optimizer_states[0].param_groups[0].ns_steps": lambda c: c["optimizer_states"][0]["param_groups"][0].update(
        ns_steps=10**12
    ),
    "optimizer_states[0].param_groups[0].ns_precondition": lambda c: c["optimizer_states"][0]["param_groups"][0].update(
        ns_precondition="newton"
    ),
    "optimizer_states[0].param_groups[0].momentum": lambda c: c["optimizer_states"][0]["param_groups"][0].update(
        momentum="0.9"
    ),
    "CarryRNGState.rng.torch": lambda c: _rng(c).update(torch=torch.zeros(5056)),  # float32, not bytes
    "CarryRNGState.rng.numpy.keys": lambda c: _rng(c)["numpy"].update(keys=torch.zeros(3, dtype=torch.int64)),
    "CarryRNGState.rng.python": lambda c: _rng(c).update(python=[1, "two", None, 4]),
    # Lightning's loop state: checked against the keys and types a fresh trainer of this Lightning writes.
    "loops.fit_loop.epoch_loop.batch_progress.total.processed": lambda c: _fit_loop(c)["epoch_loop.batch_progress"][
        "total"
    ].update(processed="2"),
    "loops.fit_loop.epoch_progress.current.reset": lambda c: _fit_loop(c)["epoch_progress"]["current"].update(reset=1),
    "lacks epoch_loop.scheduler_progress": lambda c: _fit_loop(c).pop("epoch_loop.scheduler_progress"),  # indexed
    "loops.fit_loop.epoch_loop.batch_progress.is_last_batch": lambda c: _fit_loop(c)[
        "epoch_loop.batch_progress"
    ].update(is_last_batch=[]),
}


@pytest.mark.parametrize("field", CRAFTED)
def test_a_crafted_field_is_refused_by_name_before_training(tmp_path, real_run, field):
    corpus, real = real_run
    checkpoint = load_checkpoint_safely(real)
    CRAFTED[field](checkpoint)
    ckpt = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError) as e:
        train(compose_train(tmp_path, [*TINY, f"data.path={corpus}", f"ckpt_path={ckpt}", "trainer.max_steps=4"]))
    message = str(e.value)
    assert message.startswith(f"{ckpt}: ") and field in message and "start a fresh run" in message
    assert "\n" not in message


def test_our_loaders_check_what_they_read_themselves():
    # Lightning hands them the state it read (again) from the file: they refuse junk without relying on run.py.
    with pytest.raises(CheckpointError, match=r"TextDataModule\.sampler\.seed='x'"):
        TextDataModule({}, {}, 8).load_state_dict({"sampler": {"seed": "x", "samples_consumed": 0}})
    with pytest.raises(CheckpointError, match=r"CarryRNGState\.rng\.numpy\.pos=1000000000"):
        state = CarryRNGState()
        good = {"rng": {"torch": torch.get_rng_state(), "numpy": {"keys": torch.zeros(624, dtype=torch.int64)}}}
        good["rng"]["numpy"].update(pos=10**9, has_gauss=0, gauss=0.0)
        state.load_state_dict(good)
    before = torch.get_rng_state()
    with pytest.raises(CheckpointError, match=r"CarryRNGState\.rng\.cuda\[0\]"):
        CarryRNGState().load_state_dict({"rng": {"torch": torch.get_rng_state(), "cuda": [torch.zeros(3)]}})
    assert torch.equal(torch.get_rng_state(), before)  # refused before any generator was set


def test_an_honest_checkpoint_resumes(tmp_path, real_run):
    corpus, real = real_run
    ckpt = tmp_path / "honest.ckpt"
    torch.save(load_checkpoint_safely(real), ckpt)  # read and written back: the same plain state
    result = train(compose_train(tmp_path, [*TINY, f"data.path={corpus}", f"ckpt_path={ckpt}", "trainer.max_steps=3"]))
    assert result["global_step"] == 3
