"""A stand-in for GPUs: `train.py` with Lightning's FSDP strategy running in CPU processes over gloo.

    python tests/fsdp_cpu.py trainer=fsdp trainer.accelerator=cpu trainer.devices=2 trainer.precision=32-true ...

Lightning refuses `FSDPStrategy` without a GPU (for that exact class); torch's FSDP needs
`device_id=cpu` spelled out to shard on CPUs (Lightning passes the root device's index, None on
a CPU); and torch's full state dict with `offload_to_cpu=True` (Lightning's setting) crashes
when the parameters are on the CPU already. Those three are changed here, in this process and
in the ones Lightning starts (they re-run this file); everything else is the real thing: the
strategy `trainer=fsdp` builds, its wrapping policy, sharding, gradient clipping through the
root module, full-state checkpoints and resuming, all through `train.py`'s code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import (
    FullOptimStateDictConfig,
    FullStateDictConfig,
    FullyShardedDataParallel,
    StateDictType,
)


class _OnCPU:
    """Wrap as Lightning's FSDPStrategy._setup_model does, with the CPU as the device."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from lightning.pytorch.strategies.fsdp import _setup_activation_checkpointing

        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            return super()._setup_model(model)  # already wrapped: Lightning's own handling, unchanged
        wrapped = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        _setup_activation_checkpointing(wrapped, self._activation_checkpointing_kwargs)
        return wrapped


def _full_state_dict_without_offload(module: torch.nn.Module, world_size: int, rank0_only: bool = True):
    return FullyShardedDataParallel.state_dict_type(
        module=module,
        state_dict_type=StateDictType.FULL_STATE_DICT,
        state_dict_config=FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
        optim_state_dict_config=FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
    )


def on_cpu(factory):
    """A strategy factory like `factory` whose strategies run on CPUs (same settings, a subclass)."""

    def make(**kwargs: Any):
        strategy = factory(**kwargs)
        cls = type(f"CPU{type(strategy).__name__}", (_OnCPU, type(strategy)), {})
        copy = cls.__new__(cls)
        copy.__dict__.update(strategy.__dict__)
        return copy

    return make


def install() -> None:
    import lightning.pytorch.strategies.fsdp as lightning_fsdp

    from fragment_llm.training import strategies

    lightning_fsdp._get_full_state_dict_context = _full_state_dict_without_offload
    strategies.fsdp_strategy = on_cpu(strategies.fsdp_strategy)  # what `trainer=fsdp` instantiates


if __name__ == "__main__":
    install()
    # Run train.py as the main script (Hydra finds conf/ beside it); sys.argv[0] stays this file, so the
    # processes Lightning starts run it too.
    script = Path(__file__).resolve().parents[1] / "train.py"
    exec(compile(script.read_text(), str(script), "exec"), {"__name__": "__main__", "__file__": str(script)})
