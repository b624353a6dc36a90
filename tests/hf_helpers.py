"""Tiny random Hugging Face models of the three families, saved with `save_pretrained` (needs transformers)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

# GPT-2 with OpenAI's tanh GELU; Llama with grouped-query attention, an untied head and its own RoPE base;
# Qwen3 with QK-norm, a head size != width / heads, a tied head and an embedding padded past the tokenizer.
CONFIGS = {
    "gpt2": dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, activation_function="gelu_new"),
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, rope_theta=500.0,
                  rms_norm_eps=1e-5),
    "qwen3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=64, tie_word_embeddings=True,
                  rope_theta=20000.0),
}  # fmt: skip
PADDING = {"gpt2": 0, "llama": 0, "qwen3": 24}  # embedding rows beyond the tokenizer's tokens


def hf_model(family: str, vocab_size: int, seed: int = 0, mute: list[int] = ()):
    """A transformers *ForCausalLM with random weights large enough that logits and greedy choices are distinct.

    `mute`: token ids whose output row is zeroed, so greedy decoding does not choose them (byte tokens
    that are half a character would make the text depend on how it is decoded, piece by piece or whole).
    """
    import transformers

    config_class = {"gpt2": "GPT2Config", "llama": "LlamaConfig", "qwen3": "Qwen3Config"}[family]
    config = getattr(transformers, config_class)(vocab_size=vocab_size, **CONFIGS[family])
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
            else:  # norm gains around 1, biases around 0: both visibly not their initial values
                p.copy_((p.mean() if p.mean() > 0.5 else 0.0) + 0.2 * torch.randn_like(p))
        model.get_output_embeddings().weight[list(mute)] = 0.0
    return model


def save_hf_model(family: str, path: Path, vocab_size: int, seed: int = 0, mute: list[int] = (), **save_kwargs):
    model = hf_model(family, vocab_size, seed, mute)
    model.save_pretrained(path, **save_kwargs)
    return model


def rewrite_header(file: Path, edit) -> None:
    """Change a safetensors file's JSON header in place with `edit(header)`, keeping the tensor bytes."""
    raw = file.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    file.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def half_characters(tokenizer, vocab_size: int) -> list[int]:
    """Ids that do not decode to whole characters on their own (and the padding past the tokenizer)."""
    return [i for i in range(vocab_size) if i >= tokenizer.vocab_size or "\ufffd" in tokenizer.decode([i])]
