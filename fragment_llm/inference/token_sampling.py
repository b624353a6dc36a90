"""Choosing the next token: repetition penalty, temperature, top-k, top-p, then a draw.

The order is Hugging Face's: the penalty reshapes the logits, temperature 0 takes the
argmax, otherwise temperature scales them, top-k and top-p cut the tail, and one token
is drawn per row with a seeded `torch.Generator`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fragment_llm.errors import PromptError

OVERFLOW_POLICIES = ("slide", "stop")


def check_sampling(s: Any) -> None:
    """Refuse unusable settings before any work; `s` is a SamplingConfig or a config with its keys."""

    def fail(key: str, why: str) -> None:
        raise PromptError(f"{key}={getattr(s, key)!r}: {why}")

    if s.max_new_tokens < 0:
        fail("max_new_tokens", "must be >= 0")
    if not s.temperature >= 0:  # written so that NaN fails too
        fail("temperature", "must be >= 0 (0 is greedy decoding)")
    if s.top_k is not None and s.top_k < 0:
        fail("top_k", "must be >= 0 (0 or null disables top-k)")
    if not 0 < s.top_p <= 1:
        fail("top_p", "must be in (0, 1] (1 disables nucleus sampling)")
    if not s.repetition_penalty > 0:
        fail("repetition_penalty", "must be > 0 (1 disables it; 1.1-1.3 discourages repeats)")
    if isinstance(s.stop, str) or any(not isinstance(x, str) or not x for x in s.stop):
        fail("stop", "must be a list of non-empty strings, e.g. ['\\n\\n', 'THE END']")
    if s.overflow not in OVERFLOW_POLICIES:
        fail("overflow", f"must be one of {', '.join(OVERFLOW_POLICIES)}")
    if s.slide_tokens is not None and s.slide_tokens < 1:
        fail("slide_tokens", "must be >= 1, or null for a quarter of the context")


def next_token(
    logits: torch.Tensor,
    s: Any,
    generator: torch.Generator | None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token id per row (B,) from `logits` (B, vocab); `seen` (B, vocab) marks tokens to penalize."""
    logits = logits.float()
    if seen is not None and s.repetition_penalty != 1.0:
        # CTRL's penalty: shrink a seen token's logit towards 0 from either side.
        penalized = torch.where(logits > 0, logits / s.repetition_penalty, logits * s.repetition_penalty)
        logits = torch.where(seen, penalized, logits)
    if s.temperature == 0:
        return logits.argmax(dim=-1)
    candidates = None
    if s.top_k and s.top_k < logits.size(-1):
        # Draw among the k best only: (B, k) tensors instead of (B, vocab).
        candidates = _top_k_indices(logits, s.top_k)  # (B, k)
        logits = logits.gather(1, candidates)  # (B, k)
    logits = logits / s.temperature
    if s.top_p < 1.0:
        logits = _top_p(logits, s.top_p)
    choice = _draw(F.softmax(logits, dim=-1), generator)  # (B,)
    return choice if candidates is None else candidates.gather(1, choice[:, None]).squeeze(1)


def _top_k_indices(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, k) of the k largest logits of each row, in no particular order.

    On CPU numpy's introselect is ~3x faster than torch.topk, which also sorts: a third of a
    small model's sampling step. Ties at the k-th value are broken arbitrarily, as topk does.
    """
    if logits.device.type == "cpu":
        best = np.argpartition(logits.detach().numpy(), -k, axis=-1)[:, -k:]  # (B, k)
        return torch.from_numpy(best)
    return torch.topk(logits, k, dim=-1, sorted=False).indices


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One index per row (B,) with the given probabilities (B, vocab), by inverting the CDF.

    Same distribution as torch.multinomial, about 5x faster on CPU: one uniform draw per row.
    """
    dtype = torch.float32 if probs.device.type == "mps" else torch.float64  # MPS has no float64
    cdf = probs.to(dtype).cumsum(dim=-1)  # (B, vocab)
    total = cdf[:, -1:].contiguous()  # (B, 1), 1 up to rounding
    u = torch.rand(total.shape, generator=generator, dtype=dtype, device=probs.device) * total
    index = torch.searchsorted(cdf, u, right=True)  # first token whose cumulative probability exceeds u
    # Rounding can put u on `total` itself; the last token with any probability is the right answer then.
    return torch.minimum(index, torch.searchsorted(cdf, total)).squeeze(1)  # (B,)


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens until their probability reaches top_p (always at least one)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, vocab)
    probs = sorted_logits.softmax(dim=-1)
    # Drop a token when the tokens before it already reach top_p; the first one is always kept.
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))
