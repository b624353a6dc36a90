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

from fragment_llm.checkpoint_file import check_count, check_mapping, field_error


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


def check_rng_state(state: Any, name: str = "CarryRNGState.rng") -> dict[str, Any]:
    """A stored snapshot (see capture_rng_state), checked as data before any generator is set from it: a tensor
    of the wrong dtype or size, or a junk numpy/python state, would otherwise fail deep inside torch or numpy."""
    check_mapping(name, state)
    _check_bytes(f"{name}.torch", state.get("torch"), torch.get_rng_state().numel())
    if (cuda := state.get("cuda")) is not None:
        if not isinstance(cuda, (list, tuple)) or len(cuda) > 4096:
            raise field_error(f"{name}.cuda", cuda, "must be a list of one state per GPU")
        for i, gpu in enumerate(cuda):
            _check_bytes(f"{name}.cuda[{i}]", gpu, 16)  # Philox: a 64-bit seed and a 64-bit offset
    if (n := state.get("numpy")) is not None:
        check_mapping(f"{name}.numpy", n)
        keys = n.get("keys")
        if not (isinstance(keys, torch.Tensor) and keys.dtype == torch.int64 and tuple(keys.shape) == (624,)):
            raise field_error(f"{name}.numpy.keys", keys, "must be 624 int64 words (MT19937)")
        if bool(((keys < 0) | (keys >= 2**32)).any()):
            raise field_error(f"{name}.numpy.keys", keys, "words must be in 0..2**32-1")
        check_count(f"{name}.numpy.pos", n.get("pos"), 624)
        check_count(f"{name}.numpy.has_gauss", n.get("has_gauss"), 1)
        if type(n.get("gauss")) is not float:
            raise field_error(f"{name}.numpy.gauss", n.get("gauss"), "must be a float")
    if (py := state.get("python")) is not None:
        if not (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple))):
            raise field_error(f"{name}.python", py, "must be random.getstate()'s (version, words, gauss)")
        version, internal, gauss = py
        if version != 3 or len(internal) != 625 or gauss is not None and type(gauss) is not float:
            raise field_error(f"{name}.python", py, "must be random.getstate()'s (3, 625 words, gauss)")
        if any(type(w) is not int or not 0 <= w < 2**32 for w in internal) or internal[-1] > 624:
            raise field_error(f"{name}.python[1]", internal, "words must be in 0..2**32-1, the last at most 624")
    return state


def _check_bytes(field: str, value: Any, size: int) -> None:
    if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and tuple(value.shape) == (size,)):
        raise field_error(field, value, f"must be a generator state: {size} bytes (a uint8 tensor)")


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
            restore_rng_state(check_rng_state(state))  # python and numpy now; torch again at the first batch start
            self._torch = {k: v for k, v in state.items() if k in ("torch", "cuda")}
