"""What changes when a strategy shards the parameters (FSDP): wrapping order, clipping and the gradient norm.

Under FSDP every process holds a flat 1-D shard of each parameter and of its gradient. So:
- the model must be wrapped once, by `fit` (run.py scores the untrained baseline inside it): a `validate`
  before it wraps the root first, and `fit` then leaves the embeddings and head as flat shards;
- the gradient norm is a global quantity: only the root FSDP module's `clip_grad_norm_` sees
  every shard (it all-reduces the squared norms), while `torch.nn.utils.clip_grad_norm_` on a
  shard clips by roughly 1/world_size of the truth, which is why Lightning refuses it under FSDP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from lightning.pytorch.strategies import Strategy


def sharded_root(strategy: Strategy) -> torch.nn.Module | None:
    """The root FullyShardedDataParallel module the strategy trains, or None when parameters are whole."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = getattr(strategy, "model", None)
    return model if isinstance(model, FullyShardedDataParallel) else None


def clip_grad_norm(
    strategy: Strategy, parameters: Iterable[torch.nn.Parameter], max_norm: float | None
) -> torch.Tensor:
    """Clip the gradients to `max_norm` (None or <= 0: only measure) and return their global norm before clipping.

    The norm stays a device tensor: reading it is the caller's choice (a host sync), not this function's.
    """
    limit = max_norm if max_norm and max_norm > 0 else math.inf  # inf: the scale factor clamps to 1
    root = sharded_root(strategy)
    if root is not None:
        return root.clip_grad_norm_(limit)  # all-reduces the shards' squared norms
    grads = [p for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.clip_grad_norm_(grads, limit)
