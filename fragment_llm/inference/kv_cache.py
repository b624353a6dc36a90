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

from functools import partial
from typing import NamedTuple

import torch
from torch.nn import functional as F

from fragment_llm.model.gpt import GPT, apply_rope, mlp_activation, rms_norm, smear, softcap


class _BlockWeights(NamedTuple):
    """One transformer block's tensors, in the order the step uses them (biases and QK-norm gains may be None)."""

    ln_1_w: torch.Tensor
    ln_1_b: torch.Tensor | None
    c_attn_w: torch.Tensor
    c_attn_b: torch.Tensor | None
    q_norm_w: torch.Tensor | None
    k_norm_w: torch.Tensor | None
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
        attn, mlp = block.attn, block.mlp
        q_norm = (attn.q_norm.weight, attn.k_norm.weight) if hasattr(attn, "q_norm") else (None, None)
        return _BlockWeights(
            block.ln_1.weight, getattr(block.ln_1, "bias", None), attn.c_attn.weight, attn.c_attn.bias, *q_norm,
            attn.c_proj.weight, attn.c_proj.bias, block.ln_2.weight, getattr(block.ln_2, "bias", None),
            mlp.c_fc.weight, mlp.c_fc.bias, mlp.c_proj.weight, mlp.c_proj.bias,
        )  # fmt: skip

    return [weights(block) for block in model.transformer.h]


class KVCache:
    """Keys and values of the first `length` positions of the context, for every layer.

    It belongs to one model: it also holds references to that model's weights (not copies),
    gathered once so that each decoding step does not walk the module tree. Keys and values
    are kept for the n_kv_head key/value heads only (grouped-query attention shares them);
    keys are stored rotated, at their absolute positions in the current window, exactly as
    the training forward rotates a window that starts at position 0.
    """

    def __init__(self, model: GPT, batch_size: int) -> None:
        cfg = model.config
        weight = model.lm_head.weight
        shape = (cfg.n_layer, batch_size, cfg.n_kv_heads, cfg.block_size, cfg.head_size)  # (L, B, nkv, T, hs)
        self.k = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.v = torch.zeros(shape, dtype=weight.dtype, device=weight.device)
        self.layers = list(zip(self.k.unbind(0), self.v.unbind(0), strict=True))  # per-layer views (B, nkv, T, hs)
        self.blocks = _block_weights(model)
        # The block's norm and MLP nonlinearity, chosen once (a step calls them 2-3 times per layer).
        shape, eps = (cfg.n_embd,), cfg.norm_eps
        if cfg.norm == "rmsnorm":
            self.norm = lambda x, w, b: rms_norm(x, w, eps)
        else:
            self.norm = lambda x, w, b: F.layer_norm(x, shape, w, b, eps)
        self.activation = F.gelu if cfg.mlp == "gelu" else partial(mlp_activation, cfg.mlp)
        self.model = model
        self.length = 0
        self.last_embedding: torch.Tensor | None = None  # (B, 1, C): what the next token smears in (smear only)

    def reset(self) -> None:
        self.length = 0
        self.last_embedding = None


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
    nh, nkv, hs, norm = cfg.n_head, cfg.n_kv_heads, cfg.head_size, cache.norm
    x = F.embedding(idx, model.transformer.wte.weight)  # (B, T, C); dropout is off in eval
    if cfg.smear:  # the window's first position has no predecessor, as in training
        embedding, x = x, smear(x, model.smear_gain, cache.last_embedding if start > 0 else None)
        cache.last_embedding = embedding[:, -1:]
    if "wpe" in model.transformer:
        x = x + model.transformer.wpe.weight[start:end]
    x0 = x
    rope = model.rope(start, end)  # the positions these tokens have in the window
    gqa = nkv != nh
    for i, (w, (k_cache, v_cache)) in enumerate(zip(cache.blocks, cache.layers, strict=True)):
        if i and cfg.x0_skip:
            x = x + model.x0_gains[i - 1] * x0
        qkv = F.linear(norm(x, w.ln_1_w, w.ln_1_b), w.c_attn_w, w.c_attn_b)  # (B, T, (nh + 2 nkv) hs)
        q, k, v = qkv.view(B, T, nh + 2 * nkv, hs).transpose(1, 2).split([nh, nkv, nkv], dim=1)  # (B, nh|nkv, T, hs)
        if w.q_norm_w is not None:  # per head, over hs: the layout does not matter
            q, k = rms_norm(q, w.q_norm_w, cfg.norm_eps), rms_norm(k, w.k_norm_w, cfg.norm_eps)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        if start == 0:  # prefill: exactly the training call
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)  # (B, nh, T, hs)
        else:  # one new token may attend to every cached position, so no mask is needed
            y = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end], enable_gqa=gqa)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, nh * hs), w.attn_proj_w, w.attn_proj_b)  # (B, T, C)
        h = cache.activation(F.linear(norm(x, w.ln_2_w, w.ln_2_b), w.c_fc_w, w.c_fc_b))  # (B, T, hidden)
        x = x + F.linear(h, w.mlp_proj_w, w.mlp_proj_b)  # (B, T, C)
    cache.length = end
    ln_f = model.transformer.ln_f
    x = norm(x[:, -1, :], ln_f.weight, getattr(ln_f, "bias", None))  # (B, C): only the last position predicts
    return softcap(F.linear(x, model.lm_head.weight), cfg.logit_softcap)  # (B, vocab)
