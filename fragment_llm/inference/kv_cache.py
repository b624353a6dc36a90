"""A key/value cache and the GPT forward that uses it, for generation only.

Training keeps `GPT.forward` (SDPA's fused causal path, no state). Generating with it
recomputes every position of the context for each new token; here the keys and values
of the positions already seen are kept, so a step feeds one token. The forward below
uses the GPT's own weights with the same functional ops as its modules; tests check
that it gives the training forward's logits.

Why functional calls and not the modules: a one-token step of a small model is almost
all fixed cost per op (a few microseconds each, whatever the width), and nn.Module calls
and split/view/transpose chains added up to a third of it. Going straight to
F.linear/F.layer_norm with weights gathered once makes the step ~1.4x faster.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn import functional as F

from fragment_llm.model.gpt import GPT


class _BlockWeights(NamedTuple):
    """One transformer block's tensors, in the order the step uses them (biases may be None)."""

    ln_1_w: torch.Tensor
    ln_1_b: torch.Tensor | None
    c_attn_w: torch.Tensor
    c_attn_b: torch.Tensor | None
    attn_proj_w: torch.Tensor
    attn_proj_b: torch.Tensor | None
    ln_2_w: torch.Tensor
    ln_2_b: torch.Tensor | None
    c_fc_w: torch.Tensor
    c_fc_b: torch.Tensor | None
    mlp_proj_w: torch.Tensor
    mlp_proj_b: torch.Tensor | None


def _block_weights(model: GPT) -> list[_BlockWeights]:
    def weights(block) -> _BlockWeights:
        layers = (block.ln_1, block.attn.c_attn, block.attn.c_proj, block.ln_2, block.mlp.c_fc, block.mlp.c_proj)
        return _BlockWeights(*(t for layer in layers for t in (layer.weight, layer.bias)))

    return [weights(block) for block in model.transformer.h]


class KVCache:
    """Keys and values of the first `length` positions of the context, for every layer.

    It belongs to one model: it also holds references to that model's weights (not copies),
    gathered once so that each decoding step does not walk the module tree.
    """

    def __init__(self, model: GPT, batch_size: int) -> None:
        cfg = model.config
        weight = model.lm_head.weight
        shape = (cfg.n_layer, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)  # (L, B, nh, T, hs)
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0), strict=True))  # per-layer views (B, nh, T, hs)
        self.blocks = _block_weights(model)
        self.model = model
        self.length = 0

    def reset(self) -> None:
        self.length = 0


@torch.inference_mode()
def forward_cached(model: GPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, vocab) for the token after `idx` (B, T), which continues the cached positions.

    With an empty cache this is the prefill of the whole context; afterwards T must be 1.
    """
    if cache.model is not model:
        raise ValueError("this KVCache was made for another model")
    cfg = model.config
    B, T = idx.shape
    start, end = cache.length, cache.length + T
    if end > cfg.block_size or (start > 0 and T != 1):
        raise ValueError(f"cannot feed {T} positions after {start} cached (block_size {cfg.block_size})")
    C, nh = cfg.n_embd, cfg.n_head
    wte, wpe, ln_f = model.transformer.wte, model.transformer.wpe, model.transformer.ln_f
    x = F.embedding(idx, wte.weight) + wpe.weight[start:end]  # (B, T, C); dropout is off in eval
    for w, (k_cache, v_cache) in zip(cache.blocks, cache.layers, strict=True):
        h = F.layer_norm(x, (C,), w.ln_1_w, w.ln_1_b)  # (B, T, C)
        qkv = F.linear(h, w.c_attn_w, w.c_attn_b).view(B, T, 3, nh, C // nh)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        if start == 0:  # prefill: exactly the training call
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        else:  # one new token may attend to every cached position, so no mask is needed
            y = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end])
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), w.attn_proj_w, w.attn_proj_b)  # (B, T, C)
        h = F.gelu(F.linear(F.layer_norm(x, (C,), w.ln_2_w, w.ln_2_b), w.c_fc_w, w.c_fc_b))  # (B, T, 4C)
        x = x + F.linear(h, w.mlp_proj_w, w.mlp_proj_b)  # (B, T, C)
    cache.length = end
    x = F.layer_norm(x[:, -1, :], (C,), ln_f.weight, ln_f.bias)  # (B, C): only the last position predicts
    return F.linear(x, model.lm_head.weight)  # (B, vocab)
