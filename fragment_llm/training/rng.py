"""Random number generator state that carries from one training step to the next, and into checkpoints.

Dropout draws from torch's global generator. Between two training steps other things draw
from it too: a validation run's data loader, and, after a resume, the new training data
loader. So a resumed run would see different dropout masks from step N+1 on even with the
generator state restored at load time. This callback snapshots the generators at the end of
every training batch and puts them back at the start of the next, in interrupted and
uninterrupted runs alike; a checkpoint stores the snapshot. Steps N+1.. then draw exactly
what they would have drawn without the interruption.

On several processes the snapshot of rank 0 is restored everywhere, which is what
`seed_everything` gives a fresh run too (all ranks start from the same seed).
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def capture_rng_state(torch_only: bool = False) -> dict[str, Any]:
    """The generators' states as tensors and plain values (loadable with weights_only)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if not torch_only:
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss}
        state["numpy"]["gauss"] = gauss
        state["python"] = random.getstate()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class CarryRNGState(Callback):
    """Restores torch's generators at each training batch start to their state at the previous batch end.

    Python's and numpy's generators, which no training step draws from, are saved with the
    checkpoint and restored on resume, without being carried step by step.
    """

    def __init__(self) -> None:
        self._torch: dict[str, Any] | None = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        if self._torch is not None:
            restore_rng_state(self._torch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._torch = capture_rng_state(torch_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": {**capture_rng_state(), **self._torch}} if self._torch is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("rng")
        if state is not None:
            restore_rng_state(state)  # python and numpy now; torch again at the first batch start
            self._torch = {k: v for k, v in state.items() if k in ("torch", "cuda")}
