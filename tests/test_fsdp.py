"""FSDP that trains: wrapping order, clipping, the global gradient norm, weight decay and resuming, on CPUs.

Lightning refuses FSDP without a GPU; tests/fsdp_cpu.py runs the real strategy in CPU processes
over gloo, and the pieces are also tested directly with torch's FSDP on CPUs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from fragment_llm.model.gpt import Block
from fragment_llm.training.lit_module import LitGPT
from fragment_llm.training.sharding import clip_grad_norm, sharded_root
from tests.conftest import REPO_ROOT, compose_train, corpus_text, run_python
from tests.training_helpers import scalars

pytestmark = pytest.mark.skipif(not dist.is_gloo_available(), reason="needs the gloo backend")

MODEL = {"vocab_size": 64, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "bias": True}
OPTIMIZER = {"lr": 1e-3, "min_lr": 1e-4, "weight_decay": 0.1, "betas": [0.9, 0.95], "warmup_steps": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_on_cpu(module: torch.nn.Module):
    """As Lightning's FSDPStrategy wraps a LightningModule (one unit per Block, original parameters kept)."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    policy = ModuleWrapPolicy({Block})
    return FullyShardedDataParallel(
        module, auto_wrap_policy=policy, use_orig_params=True, device_id=torch.device("cpu")
    )


def _decay_groups(module: LitGPT, names: dict[int, str]) -> dict[float, set[str]]:
    module.trainer = SimpleNamespace(max_steps=10)  # all configure_optimizers reads from the trainer
    optimizer = module.configure_optimizers()["optimizer"]
    return {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}


def _decay_worker(rank: int, world: int, port: int, out: str) -> None:
    from torch.distributed.fsdp._common_utils import clean_tensor_name

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        module = LitGPT(model=MODEL, optimizer=OPTIMIZER)
        wrapped = _fsdp_on_cpu(module)
        names = {id(p): clean_tensor_name(n) for n, p in wrapped.named_parameters()}
        groups = _decay_groups(module, names)
        flat = all(p.dim() == 1 for p in module.parameters())  # what the optimizer sees: 1-D shards
        Path(out, f"{rank}.json").write_text(
            json.dumps({"flat": flat, **{str(k): sorted(v) for k, v in groups.items()}})
        )
    finally:
        dist.destroy_process_group()


def test_weight_decay_applies_to_the_same_parameters_under_ddp_and_fsdp(tmp_path):
    torch.manual_seed(0)
    whole = LitGPT(model=MODEL, optimizer=OPTIMIZER)  # DDP: every process holds whole parameters
    expected = _decay_groups(whole, {id(p): n for n, p in whole.named_parameters()})
    assert "model.transformer.wte.weight" in expected[0.1] and "model.transformer.ln_f.weight" in expected[0.0]

    torch.multiprocessing.spawn(_decay_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got["flat"]  # FULL_SHARD over 2 processes: no parameter is 2-D any more
        assert (set(got["0.1"]), set(got["0.0"])) == (expected[0.1], expected[0.0])


def test_nothing_wraps_the_model_before_fit(tmp_path, monkeypatch):
    """FSDP wraps the model in the first trainer stage: the untrained baseline must be scored inside fit."""
    import lightning.pytorch as pl

    from fragment_llm.training.run import train
    from tests.training_helpers import TINY

    stages = []
    for name in ("fit", "validate"):
        original = getattr(pl.Trainer, name)

        def record(self, *args, _name=name, _original=original, **kwargs):
            stages.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(pl.Trainer, name, record)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    result = train(compose_train(tmp_path, [*TINY, f"data.path={corpus}", "trainer.max_steps=2"]))
    assert stages[0] == "fit", stages  # a validate() first would wrap the root under FSDP
    assert result["initial_val_loss"] is not None  # the baseline still exists, from fit's sanity check


def test_clipping_goes_through_the_fsdp_root_and_returns_the_norm_before_clipping():
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        module = LitGPT(model=MODEL, optimizer=OPTIMIZER)
        reference = LitGPT(model=MODEL, optimizer=OPTIMIZER)
        reference.load_state_dict(module.state_dict())
        wrapped = _fsdp_on_cpu(module)
        idx = torch.randint(0, 64, (2, 16))
        for m in (wrapped, reference):
            m(idx, idx)[1].backward()
        strategy = SimpleNamespace(model=wrapped)
        assert sharded_root(strategy) is wrapped and sharded_root(SimpleNamespace(model=reference)) is None

        expected = clip_grad_norm(SimpleNamespace(model=reference), reference.parameters(), 0.5)
        got = clip_grad_norm(strategy, module.parameters(), 0.5)
        assert torch.allclose(got, expected, rtol=1e-5) and got > 0.5  # the norm before clipping
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters()]))
        assert torch.allclose(after, torch.tensor(0.5), rtol=1e-4)  # and the gradients were clipped
        assert torch.equal(clip_grad_norm(strategy, module.parameters(), None), after)  # None: measure only
    finally:
        dist.destroy_process_group()


def _train(cwd: Path, corpus: Path, fsdp: bool, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "data=text", f"data.path={corpus}", "tokenizer=char", "model=tiny", "data.batch_size=8",
        "optimizer.warmup_steps=2", "optimizer.decay_steps=6", "trainer.limit_val_batches=0",
        "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "optimizer=adamw",  # the optimizer FSDP trains with (trainer=fsdp picks it), under DDP too
        "trainer=fsdp" if fsdp else "trainer=ddp_cpu", *extra,
    ]  # fmt: skip
    script = REPO_ROOT / "tests" / "fsdp_cpu.py" if fsdp else REPO_ROOT / "train.py"
    return run_python([str(script), *args], cwd, timeout=600)


def test_fsdp_trains_and_resumes_on_the_loss_curve_of_ddp(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(40_000), encoding="utf-8")
    (tmp_path / "ddp").mkdir(), (tmp_path / "fsdp").mkdir()

    ddp = _train(tmp_path / "ddp", corpus, False, "trainer.max_steps=6")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    fsdp = _train(tmp_path / "fsdp", corpus, True, "trainer.max_steps=3")  # gradient_clip_val=1.0 included
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    resumed = _train(tmp_path / "fsdp", corpus, True, "ckpt_path=last", "trainer.max_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    [ddp_run], [fsdp_run] = (list((tmp_path / d / "outputs" / "train").iterdir()) for d in ("ddp", "fsdp"))
    for tag in ("train/loss", "train/grad_norm"):  # grad_norm: the global norm, not one shard's
        want, got = scalars(ddp_run, tag), scalars(fsdp_run, tag)
        assert sorted(got) == sorted(want) == list(range(6)), tag
        assert all(abs(got[s] - want[s]) <= 1e-4 * abs(want[s]) for s in want), (tag, want, got)
    ckpt = torch.load(fsdp_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and ckpt["state_dict"]["model.transformer.wte.weight"].dim() == 2  # full, 2-D
    assert os.path.exists(fsdp_run / "result.json")
