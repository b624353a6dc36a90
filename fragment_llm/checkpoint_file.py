"""Reading a checkpoint file without trusting it: `torch.load(weights_only=True)` and one-line errors.

Shared by training (resume) and inference (generate.py); kept free of Lightning so that
sampling does not import the training framework.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fragment_llm.errors import CheckpointError


def load_checkpoint_safely(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """`torch.load(weights_only=True)`, with a one-line error for files that are not plain checkpoints."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except Exception as e:  # torch raises pickle.UnpicklingError for anything beyond tensors and plain data
        if type(e).__name__ == "UnpicklingError":
            raise CheckpointError(
                f"{path}: refused to load: it holds objects other than tensors and plain data. "
                "Only checkpoints written by Fragment_LLM training are accepted."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Fragment_LLM training checkpoint (found {type(checkpoint).__name__})")
    return checkpoint


# Steps, positions and counters a checkpoint stores: far beyond any run, and exact as a float.
MAX_COUNT = 2**53


def field_error(field: str, value: Any, why: str) -> CheckpointError:
    """`field=value: why`, the value cut short; callers that know the file add it (training/resume_state.py)."""
    shown = f"tensor of {value.dtype} {list(value.shape)}" if isinstance(value, torch.Tensor) else repr(value)
    return CheckpointError(f"{field}={shown[:80]}: {why}")


def check_count(field: str, value: Any, limit: int = MAX_COUNT) -> int:
    """A stored step, position or counter: an int (not a bool) in 0..limit."""
    if type(value) is not int or not 0 <= value <= limit:
        raise field_error(field, value, f"must be an integer in 0..{limit}")
    return value


def check_mapping(field: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise field_error(field, value, "must be a mapping")
    return value
