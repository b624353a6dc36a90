"""Tiny models and checkpoints for the inference tests (random weights: fast and deterministic)."""

from __future__ import annotations

from pathlib import Path

import torch

from fragment_llm.data.tokenizer import Tokenizer, train_tokenizer
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.training.lit_module import LitGPT

MODEL = dict(block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)
OPT = dict(lr=1e-3, min_lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99], warmup_steps=0, decay_steps=None)
CHARS = "abcdefghij klmnop\n"


def char_tokenizer() -> Tokenizer:
    return train_tokenizer("char", [CHARS], vocab_size=0)


def lively(model: GPT, scale: float = 8.0) -> GPT:
    """Scale up the random matrices so greedy decoding does not collapse into one repeated token at once."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(scale)
    return model


def tiny_gpt(vocab_size: int = 97, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return lively(GPT(GPTConfig(vocab_size=vocab_size, **{**MODEL, **overrides}))).eval()


def save_checkpoint(path: Path, tokenizer: Tokenizer, vocab_size: int | None = None, **overrides) -> Path:
    """A checkpoint laid out as Lightning writes it: state_dict ("model." prefix), hyper_parameters, tokenizer."""
    torch.manual_seed(0)
    lit = LitGPT(
        model={**MODEL, **overrides, "vocab_size": vocab_size or tokenizer.vocab_size},
        optimizer=OPT,
        tokenizer_json=tokenizer.to_json(),
    )
    lively(lit.model)
    ckpt = {"state_dict": lit.state_dict(), "hyper_parameters": dict(lit.hparams), "global_step": 0}
    lit.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path
