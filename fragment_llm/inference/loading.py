"""Find a checkpoint, open it safely, and rebuild the GPT and tokenizer it describes.

A checkpoint is opened with `torch.load(weights_only=True)`: only tensors and plain
containers are accepted, so a crafted file cannot run code. The model config and the
tokenizer come from the checkpoint itself (plain dicts and JSON text); the config is checked
against the weights before the model is built (checkpoint_shapes.py), the tokenizer file
by tokenizer_file.py, and nothing from it is ever passed to `hydra.utils.instantiate`.
A Hugging Face model directory (config.json, safetensors weights, tokenizer.json) loads too,
through the checks of interop/hf_dir.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_json
from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.interop.hf_dir import HFModelDir, is_hf_model_dir
from fragment_llm.model.checkpoint_shapes import check_weights_match_config, claimed_config, model_state
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.precision import generation_dtype

log = logging.getLogger(__name__)

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The context a Hugging Face model gets when sampled directly: their contexts reach 32k+ tokens, and the
# KV cache grows with it (Qwen3-0.6B: 9 GB at 40960); past it the window slides (see engine.py).
HF_SAMPLING_CONTEXT = 2048


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
    """Accept a checkpoint file, a run directory, a directory of runs (its newest last.ckpt), or a
    Hugging Face model directory (one with config.json: returned as it is)."""
    path = Path(ckpt).expanduser().resolve()
    if is_hf_model_dir(path):
        return path
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
    """The GPT (on CPU, float32, eval mode) and tokenizer of a training checkpoint or a model directory."""
    if is_hf_model_dir(path):
        return load_hf_model_dir(path)
    return model_from_checkpoint(load_checkpoint_safely(path), path)


def load_hf_model_dir(path: Path) -> tuple[GPT, Tokenizer]:
    """The model and tokenizer of a Hugging Face model directory, at most HF_SAMPLING_CONTEXT tokens of context."""
    hf = HFModelDir.open(path)
    tokenizer = load_tokenizer(path)
    _check_vocab(tokenizer, hf.config, path)
    return hf.load_model(min(hf.config.block_size, HF_SAMPLING_CONTEXT)), tokenizer


def _check_vocab(tokenizer: Tokenizer, config: GPTConfig, path: Path) -> None:
    # A pretrained model's embedding may have more rows than its tokenizer has tokens (Qwen pads to a
    # multiple of 128); ours never; fewer would let the tokenizer's ids index past the table.
    padded = tokenizer.kind == "hf" and tokenizer.vocab_size <= config.vocab_size
    if tokenizer.vocab_size != config.vocab_size and not padded:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model has vocab_size="
            f"{config.vocab_size}; they do not belong together."
        )


def model_from_checkpoint(checkpoint: dict[str, Any], path: Path) -> tuple[GPT, Tokenizer]:
    """The GPT and tokenizer of an opened training checkpoint (see load_checkpoint_safely)."""
    log.info("%s: %s", path.name, origin(checkpoint.get("run_record")))
    config = claimed_config(checkpoint, path)
    state = model_state(checkpoint)
    check_weights_match_config(config, state, path)  # before anything is allocated for the model
    tokenizer = _tokenizer(checkpoint, path)
    _check_vocab(tokenizer, config, path)
    model = GPT(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the stored model config ({e})") from None
    return model.eval(), tokenizer


def origin(record: Any) -> str:
    """Which run and commit a checkpoint came from, from its run record (training/run_record.py), in one line.

    The record is untrusted text: only printable characters of known fields are shown, each cut short.
    """
    if not isinstance(record, dict):
        return "no run record (written before checkpoints carried one)"

    def shown(key: str, limit: int = 300, within: Any = record) -> str:
        value = within.get(key) if isinstance(within, dict) else None
        return "".join(c for c in str(value) if c.isprintable())[:limit]

    git = record.get("git")
    commit = f"commit {shown('commit', 12, git)}" if isinstance(git, dict) else "no git commit recorded"
    if isinstance(git, dict) and git.get("dirty"):
        commit += " with uncommitted changes"
    return f"trained in {shown('run_dir')} ({commit}, started {shown('started', 40)}): {shown('command')}"


def _tokenizer(checkpoint: dict[str, Any], path: Path) -> Tokenizer:
    text = checkpoint.get("tokenizer")
    if isinstance(text, str):
        return tokenizer_from_json(text, source=f"{path} (embedded tokenizer)")
    beside = path.parent.parent / "tokenizer.json"  # <run>/checkpoints/x.ckpt -> <run>/tokenizer.json
    if beside.is_file():
        return load_tokenizer(beside)
    raise CheckpointError(f"{path}: carries no tokenizer and there is no {beside}")
