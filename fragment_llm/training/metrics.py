"""FLOPs per token, what MFU is measured against (bytes per token, for bits per byte: data/tokenizer.py)."""

from __future__ import annotations

from fragment_llm.model.gpt import GPTConfig


def flops_per_token(config: GPTConfig, num_params: int) -> int:
    """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B and nanoGPT.

    6 per parameter (2 forward, 4 backward) plus the attention scores, which grow with context.
    """
    head_dim = config.n_embd // config.n_head
    return 6 * num_params + 12 * config.n_layer * config.n_head * head_dim * config.block_size
