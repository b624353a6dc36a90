"""Distributed strategy factories that YAML alone cannot express (they need Python classes as arguments)."""

from __future__ import annotations

from lightning.pytorch.strategies import FSDPStrategy

from fragment_llm.model.gpt import Block


def fsdp_strategy(sharding_strategy: str = "FULL_SHARD", activation_checkpointing: bool = False) -> FSDPStrategy:
    """Lightning's FSDP with one shard unit per transformer Block, saving full (unsharded) checkpoints."""
    return FSDPStrategy(
        auto_wrap_policy={Block},
        activation_checkpointing_policy={Block} if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type="full",
    )
