"""A checkpoint's model is bounded by its weights, not by its claims.

A checkpoint says which model it holds (`hyper_parameters.model`: n_layer, n_embd, ...) and
carries the tensors. A crafted one could claim `n_layer=10**6` beside a small state dict, and
building that model would exhaust memory before any shape mismatch were noticed. So, before
a model is built for real:

1. cheap bounds from the tensors alone: every tensor is backed by its own bytes (no broadcast
   views posing as huge weights), the total is bounded, the token embedding gives vocab_size
   and n_embd, the distinct `transformer.h.<i>.` indices give n_layer, and the position
   embedding (if any) gives block_size;
2. the claimed model is built on the `meta` device (shapes only, no memory) and every
   parameter and buffer name and shape must equal the checkpoint's. This part knows no layer
   names, so it holds for any architecture the GPT config can describe.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fragment_llm.errors import CheckpointError
from fragment_llm.model.gpt import GPT, GPTConfig

MAX_PARAMETERS = 10**11  # far beyond any model this project trains
MAX_BLOCK_SIZE = 1 << 20  # context length; bounds position tables built from block_size alone
MAX_UNSTORED_BUFFER_ELEMENTS = 1 << 26  # buffers the model builds itself (not in the checkpoint), e.g. RoPE tables
_BLOCK_KEY = re.compile(r"transformer\.h\.(\d{1,9})\.")


def model_state(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The GPT's own state dict inside a Lightning checkpoint (LitGPT's "model." prefix and
    torch.compile's "_orig_mod." removed)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        return {}
    return {
        k.removeprefix("model.").replace("_orig_mod.", ""): v
        for k, v in state.items()
        if isinstance(k, str) and k.startswith("model.")
    }


def claimed_config(checkpoint: Mapping[str, Any], path: Path | str) -> GPTConfig:
    """The GPTConfig a checkpoint's hyperparameters describe (keys the config does not know are ignored)."""
    try:
        stored = checkpoint["hyper_parameters"]["model"]
        known = {f.name for f in dataclasses.fields(GPTConfig)}
        return GPTConfig(**{k: v for k, v in stored.items() if k in known})
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: no usable model config in the checkpoint ({e!r})") from None


def check_weights_match_config(config: GPTConfig, state: Mapping[str, Any], path: Path | str) -> None:
    """Refuse (CheckpointError naming the file) a model config that its weights do not bear out."""

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: {why}; refused (the model it claims is not the one its weights hold)")

    _check_cheap_bounds(config, state, bad)
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated whatever the claims
            meta = GPT(config)
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise bad(f"its model config cannot be built ({str(e)[:200]})") from None
    expected = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if missing := sorted(expected.keys() - found.keys()):
        raise bad(f"weights missing for {', '.join(missing[:5])}")
    if extra := sorted(found.keys() - expected.keys()):
        raise bad(f"weights the model does not have: {', '.join(extra[:5])}")
    if wrong := [k for k in expected if expected[k] != found[k]]:
        raise bad("; ".join(f"{k} is {list(found[k])}, the config implies {list(expected[k])}" for k in wrong[:3]))
    unstored = sum(b.numel() for name, b in meta.named_buffers() if name not in expected)
    if unstored > MAX_UNSTORED_BUFFER_ELEMENTS:
        raise bad(f"its config implies {unstored:,} buffer elements beyond its weights")


def _check_cheap_bounds(config: GPTConfig, state: Mapping[str, Any], bad) -> None:
    for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad(f"model.{name}={value!r} is not an integer")
    total = 0
    for key, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise bad(f"state_dict entry {key!r} is not a tensor")
        # A broadcast view (stride 0) can pose as a huge tensor over a few stored bytes.
        if t.numel() and t.untyped_storage().nbytes() < t.numel() * t.element_size():
            raise bad(f"{key} claims {t.numel():,} elements but stores fewer")
        total += t.numel()
    if total > MAX_PARAMETERS:
        raise bad(f"{total:,} weights exceed the limit of {MAX_PARAMETERS:,}")
    wte = state.get("transformer.wte.weight")
    if not isinstance(wte, torch.Tensor) or wte.dim() != 2:
        raise bad("no 2-D token embedding transformer.wte.weight")
    if tuple(wte.shape) != (config.vocab_size, config.n_embd):
        raise bad(
            f"it claims vocab_size={config.vocab_size}, n_embd={config.n_embd} but transformer.wte.weight is "
            f"{list(wte.shape)}"
        )
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    if blocks != set(range(config.n_layer)):
        raise bad(f"it claims n_layer={config.n_layer} but its weights hold {len(blocks)} transformer blocks")
    wpe = state.get("transformer.wpe.weight")
    if isinstance(wpe, torch.Tensor) and wpe.shape[:1] != (config.block_size,):
        raise bad(f"it claims block_size={config.block_size} but transformer.wpe.weight is {list(wpe.shape)}")
    if not isinstance(config.block_size, int) or not 0 < config.block_size <= MAX_BLOCK_SIZE:
        raise bad(f"block_size={config.block_size!r} is outside 1..{MAX_BLOCK_SIZE}")
