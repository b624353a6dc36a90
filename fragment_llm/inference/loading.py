"""Find a checkpoint, open it safely, and rebuild the GPT and tokenizer it describes.

A checkpoint is opened with `torch.load(weights_only=True)`: only tensors and plain
containers are accepted, so a crafted file cannot run code. The model config and the
tokenizer come from the checkpoint itself (plain dicts and JSON text); nothing from it
is ever passed to `hydra.utils.instantiate`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_json
from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.precision import generation_dtype

log = logging.getLogger(__name__)

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def find_latest_checkpoint(runs_dir: str | os.PathLike) -> Path:
    """The most recently written `last.ckpt` below `runs_dir` (runs and sweep jobs alike)."""
    runs_dir = Path(runs_dir).expanduser().resolve()
    candidates = list(runs_dir.glob("**/checkpoints/last.ckpt")) if runs_dir.is_dir() else []
    # A symlink may point anywhere; only files that really live under runs_dir are candidates.
    candidates = [p for p in candidates if p.resolve().is_relative_to(runs_dir)]
    if not candidates:
        raise CheckpointError(
            f"no trained run found under {runs_dir} (looked for */checkpoints/last.ckpt). "
            "Train one with `python train.py`, or pass ckpt=/path/to/file.ckpt."
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def resolve_checkpoint(ckpt: str | os.PathLike) -> Path:
    """Accept a checkpoint file, a run directory, or a directory of runs (its newest last.ckpt)."""
    path = Path(ckpt).expanduser().resolve()
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        return find_latest_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt={ckpt!s}: no checkpoint file there. Pass a .ckpt file or a run directory.")
    return path


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; anything else must exist on this machine."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={name!r}: not a device. Use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name!r}: CUDA is not available here. Use device=auto or device=cpu.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r}: MPS is not available here. Use device=auto or device=cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r}: not supported. Use auto, cpu, cuda, cuda:N or mps.")
    return device


def resolve_precision(name: str, device: torch.device, n_embd: int | None = None) -> torch.dtype:
    """`auto`: bfloat16 on GPUs with bf16 units (else float16), float16 on MPS; on a CPU float32, or
    bfloat16 where AMX makes it faster for a model `n_embd` wide (fragment_llm/precision.py)."""
    if name == "auto":
        dtype, why = generation_dtype(device, n_embd)
        if n_embd is not None:  # the model is known: this is the choice, not an early check of the name
            log.info("precision=auto: %s (%s)", str(dtype).removeprefix("torch."), why)
        return dtype
    if name not in PRECISIONS:
        raise ConfigError(f"precision={name!r}: not known. Use auto, {', '.join(PRECISIONS)}.")
    return PRECISIONS[name]


def load_checkpoint(path: Path) -> tuple[GPT, Tokenizer]:
    """The GPT (on CPU, float32, eval mode) and tokenizer stored in a training checkpoint."""
    checkpoint = load_checkpoint_safely(path)
    config = _model_config(checkpoint, path)
    tokenizer = _tokenizer(checkpoint, path)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model was trained with "
            f"vocab_size={config.vocab_size}; they do not belong together."
        )
    model = GPT(config)
    # Lightning prefixes the LightningModule's attribute ("model."); torch.compile adds "_orig_mod.".
    state = {
        k.removeprefix("model.").replace("_orig_mod.", ""): v
        for k, v in checkpoint.get("state_dict", {}).items()
        if k.startswith("model.")
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the stored model config ({e})") from None
    return model.eval(), tokenizer


def _model_config(checkpoint: dict, path: Path) -> GPTConfig:
    try:
        stored = checkpoint["hyper_parameters"]["model"]
        known = {f.name for f in dataclasses.fields(GPTConfig)}
        return GPTConfig(**{k: v for k, v in stored.items() if k in known})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: no usable model config in the checkpoint ({e!r})") from None


def _tokenizer(checkpoint: dict[str, Any], path: Path) -> Tokenizer:
    text = checkpoint.get("tokenizer")
    if isinstance(text, str):
        return tokenizer_from_json(text, source=f"{path} (embedded tokenizer)")
    beside = path.parent.parent / "tokenizer.json"  # <run>/checkpoints/x.ckpt -> <run>/tokenizer.json
    if beside.is_file():
        return load_tokenizer(beside)
    raise CheckpointError(f"{path}: carries no tokenizer and there is no {beside}")
