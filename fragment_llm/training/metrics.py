"""What the training metrics are measured in: bytes per token (for bits per byte) and FLOPs per token (for MFU)."""

from __future__ import annotations

import json

import torch

from fragment_llm.model.gpt import GPT


def token_byte_lengths(tokenizer_json: str) -> torch.Tensor:
    """(vocab,) UTF-8 bytes each token stands for; 0 for special tokens such as <|endoftext|>.

    Bits per byte = total loss in bits / total bytes, counting only tokens that are text, so
    models with different vocabularies (or character- vs BPE-level) compare on the same scale.
    """
    data = json.loads(tokenizer_json)
    if "chars" in data:  # character-level: one token per character, then <|endoftext|>
        lengths = [len(c.encode("utf-8")) for c in data["chars"]] + [0]
        return torch.tensor(lengths, dtype=torch.long)
    if data.get("format") == "fragment_llm.hf/1":  # a pretrained model's tokenizer (data/hf_tokenizer.py)
        data = data["tokenizer"]
    # Byte-level BPE: every character of a vocabulary entry stands for exactly one byte. SentencePiece-style
    # (byte fallback): "▁" is a space, <0xNN> one byte, other characters their UTF-8 bytes.
    sentencepiece = bool(data["model"].get("byte_fallback"))
    vocab: dict[str, int] = data["model"]["vocab"]
    special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    size = max([*vocab.values(), *special]) + 1
    lengths = torch.zeros(size, dtype=torch.long)
    for token, i in vocab.items():
        if i not in special:
            lengths[i] = _sentencepiece_bytes(token) if sentencepiece else len(token)
    return lengths


def _sentencepiece_bytes(token: str) -> int:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return 1
    return len(token.replace("\u2581", " ").encode("utf-8"))


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
