"""A key/value cache and the GPT forward that uses it, for generation only.

Training keeps `GPT.forward` (SDPA's fused causal path, no state). Generating with it
recomputes every position of the context for each new token; here the keys and values
of the positions already seen are kept, so a step feeds one token. The forward below
reuses the GPT's own modules and weights; only the attention's bookkeeping differs,
and tests check that it gives the training forward's logits.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from fragment_llm.model.gpt import GPT, CausalSelfAttention


class KVCache:
    """Keys and values of the first `length` positions of the context, for every layer."""

    def __init__(self, model: GPT, batch_size: int) -> None:
        cfg = model.config
        weight = model.lm_head.weight
        shape = (cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)  # (L, B, nh, T, hs)
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0), strict=True))  # per-layer views (B, nh, T, hs)
        self.length = 0

    def reset(self) -> None:
        self.length = 0


@torch.inference_mode()
def forward_cached(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, vocab) for the token after `idx` (B, T), which continues the cached positions.

    With an empty cache this is the prefill of the whole context; afterwards T must be 1.
    """
    B, T = idx.shape
    start = cache.length
    if start + T > model.config.block_size or (start > 0 and T != 1):
        raise ValueError(f"cannot feed {T} positions after {start} cached (block_size {model.config.block_size})")
    pos_emb = model.transformer.wpe.weight[start : start + T]  # (T, C): positions start..start+T-1
    x = model.transformer.wte(idx) + pos_emb  # (B, T, C); dropout is off in eval
    for block, (k_cache, v_cache) in zip(model.transformer.h, cache.layers, strict=True):
        x = x + _attend(block.attn, block.ln_1(x), k_cache, v_cache, start)
        x = x + block.mlp(block.ln_2(x))
    cache.length = start + T
    x = model.transformer.ln_f(x[:, -1, :])  # (B, C): only the last position predicts the next token
    return model.lm_head(x)  # (B, vocab)


def _attend(
    attn: CausalSelfAttention, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, start: int
) -> torch.Tensor:
    B, T, C = x.shape
    hs = C // attn.n_head
    q, k, v = attn.c_attn(x).split(attn.n_embd, dim=2)  # 3 x (B, T, C)
    q = q.view(B, T, attn.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, attn.n_head, hs).transpose(1, 2)
    v = v.view(B, T, attn.n_head, hs).transpose(1, 2)
    end = start + T
    k_cache[:, :, start:end] = k
    v_cache[:, :, start:end] = v
    if start == 0:  # prefill: exactly the training call
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:  # one new token may attend to every cached position, so no mask is needed
        y = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end])
    y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
    return attn.c_proj(y)
