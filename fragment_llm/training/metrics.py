"""FLOPs per token, what MFU is measured against (bytes per token, for bits per byte: data/tokenizer.py)."""

from __future__ import annotations

from fragment_llm.model.gpt import GPT


def flops_per_token(model: GPT) -> int:
    """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B and nanoGPT.

    6 per parameter a token is multiplied with (2 forward, 4 backward): every parameter but the
    embedding tables, which are looked up (a tied token embedding counts once, as the output head).
    Plus the attention scores and their weighted sum over the context, per query head.
    """
    cfg = model.config
    looked_up = sum(p.numel() for n, p in model.params_by_role()["embeddings"])
    if cfg.tie_embeddings:
        looked_up -= model.transformer.wte.weight.numel()
    matmul_params = sum(p.numel() for p in model.parameters()) - looked_up
    return 6 * matmul_params + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * cfg.block_size
