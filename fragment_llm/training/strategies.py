"""Distributed strategy factories that YAML alone cannot express (they need Python classes as arguments)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import FSDPStrategy, Strategy

from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.model.gpt import Block


def fsdp_strategy(sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False) -> FSDPStrategy:
    """Lightning's FSDP with one shard unit per transformer Block, saving full (unsharded) checkpoints."""
    return WeightsOnlyFSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type="full",
    )


class WeightsOnlyFSDPStrategy(FSDPStrategy):
    """FSDPStrategy whose resume reads the checkpoint with `torch.load(weights_only=True)`.

    Lightning's own FSDP loader unpickles a full checkpoint with an unrestricted unpickler
    (`_lazy_load`), and a sharded directory through torch.distributed.checkpoint, whose
    FileSystemReader reads `.metadata` with plain `pickle.load`; either runs code from a
    crafted file. Here a full checkpoint file is read by our weights-only reader and applied
    as Lightning applies it; sharded directories (which our runs never write:
    state_dict_type="full") are refused.
    """

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        from lightning.fabric.strategies.fsdp import _get_full_state_dict_context
        from lightning.fabric.strategies.model_parallel import _load_raw_module_state
        from lightning.pytorch.trainer.states import TrainerFn
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        path = Path(self.broadcast(checkpoint_path))
        if not path.is_file():
            raise CheckpointError(
                f"{path}: not a checkpoint file. Sharded FSDP checkpoint directories are not loaded (their loader "
                "is not restricted to tensors); resume from a full checkpoint such as checkpoints/last.ckpt."
            )
        checkpoint = load_checkpoint_safely(path, mmap=True)  # memory-mapped: no full copy per process
        module = self.lightning_module
        _load_raw_module_state(
            checkpoint.pop("state_dict"), module=self.model, world_size=self.world_size, strict=module.strict_loading
        )
        optimizer_states = checkpoint.get("optimizer_states")
        if optimizer_states is None or module.trainer.state.fn != TrainerFn.FITTING:
            return checkpoint
        if len(self.optimizers) != len(optimizer_states):
            raise CheckpointError(
                f"{path}: holds {len(optimizer_states)} optimizer states for {len(self.optimizers)} optimizers"
            )
        with _get_full_state_dict_context(self.model, world_size=self.world_size, rank0_only=False):
            for optimizer, state in zip(self.optimizers, optimizer_states, strict=True):
                if isinstance(next(iter(state["state"]), None), int):  # saved by a plain (unsharded) optimizer
                    state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_NAME, self.model)
                state = FSDP.optim_state_dict_to_load(model=self.model, optim=optimizer, optim_state_dict=state)
                optimizer.load_state_dict(state)
        return checkpoint


def check_resume_loader(strategy: Strategy) -> None:
    """Refuse to resume under a strategy whose checkpoint loader we have not vetted (e.g. Lightning's own FSDP,
    DeepSpeed): only `checkpoint_io` (our weights-only SafeCheckpointIO) and WeightsOnlyFSDPStrategy read files."""
    from fragment_llm.training.checkpoint_io import SafeCheckpointIO

    loader = type(strategy).load_checkpoint
    if loader is WeightsOnlyFSDPStrategy.load_checkpoint:
        return
    if loader is Strategy.load_checkpoint and isinstance(strategy.checkpoint_io, SafeCheckpointIO):
        return
    raise ConfigError(
        f"trainer.strategy: {type(strategy).__name__} reads checkpoints with a loader that may unpickle code, so it "
        "cannot resume a run here. Use trainer=fsdp for FSDP, or a DDP/single-device strategy."
    )
