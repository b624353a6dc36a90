"""The decoding loop: context window, optional KV cache, one sampled token per step.

Context policy. The model sees at most `block_size` tokens. With `overflow="slide"`, when
the next step would not fit, the window moves forward by `slide_tokens` (default: a
quarter of the context): the oldest tokens are dropped and, with the cache, the kept ones
are prefilled again in one batched forward. Sliding one token at a time (`slide_tokens=1`)
is nanoGPT's crop, but then every step recomputes the whole context; sliding by a quarter
keeps 3/4 to all of the context at every step and costs one prefill per quarter-context
of tokens. With `overflow="stop"`, generation ends when the context is full. The uncached
path follows exactly the same windows, so cached and uncached greedy decoding agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from fragment_llm.inference.kv_cache import KVCache, forward_cached
from fragment_llm.inference.token_sampling import next_token
from fragment_llm.model.gpt import GPT


def slide_tokens(block_size: int, s: Any) -> int:
    """How many tokens the window moves when it slides."""
    return min(s.slide_tokens or max(1, block_size // 4), block_size)


@torch.inference_mode()
def generate_tokens(
    model: GPT,
    prompt_ids: Sequence[int],
    s: Any,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every sample, (num_samples,), step by step, at most `s.max_new_tokens` times.

    `s` holds the SamplingConfig fields; it is assumed valid (see `check_sampling`).
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one context token (use <|endoftext|> for none)")
    block = model.config.block_size
    keep = block + 1 - slide_tokens(block, s)  # context length right after a slide
    device = model.lm_head.weight.device
    B = num_samples
    seen = None  # (B, vocab): tokens the repetition penalty applies to (the prompt and everything generated)
    if s.repetition_penalty != 1.0:
        seen = torch.zeros(B, model.config.vocab_size, dtype=torch.bool, device=device)
        seen[:, torch.tensor(list(prompt_ids), device=device)] = True
    # Only the context is kept: the window, then room for the token that may make it overflow.
    window = torch.empty(B, block + 1, dtype=torch.long, device=device)  # (B, block + 1)
    context = list(prompt_ids) if len(prompt_ids) <= block else list(prompt_ids)[-keep:]
    n = len(context)  # the model sees window[:, :n]
    window[:, :n] = torch.tensor(context, dtype=torch.long, device=device)
    cache = KVCache(model, B) if s.use_kv_cache else None
    for _ in range(s.max_new_tokens):
        if n > block:
            if s.overflow == "stop":
                return
            window[:, :keep] = window[:, n - keep : n].clone()  # slide: the oldest tokens leave
            n = keep
            if cache is not None:
                cache.reset()
        if cache is not None:
            logits = forward_cached(model, window[:, cache.length : n], cache)  # (B, vocab)
        else:
            logits = model(window[:, :n])[0][:, -1, :]  # the training forward over the whole window
        nxt = next_token(logits, s, generator, seen)  # (B,)
        window[:, n] = nxt
        n += 1
        if seen is not None:
            seen.scatter_(1, nxt[:, None], True)
        yield nxt
