"""The Python API: `load_model(ckpt)` gives a model that writes text.

    from fragment_llm import load_model

    model = load_model("outputs/train/2026-11-28_12-00-00")        # a run directory or a .ckpt file
    print(model.generate("KING:", max_new_tokens=100, seed=0))      # prompt + continuation
    for piece in model.stream("KING:", temperature=0.7):            # the continuation, as it is produced
        print(piece, end="", flush=True)
    samples = model.generate("KING:", num_samples=4)                # a list of 4 texts, one batch

Keyword arguments are the fields of `fragment_llm.config.SamplingConfig`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, overload

import torch

from fragment_llm.config import GenerateConfig, SamplingConfig
from fragment_llm.data.tokenizer import Tokenizer
from fragment_llm.errors import ConfigError, PromptError
from fragment_llm.inference.loading import load_checkpoint, resolve_checkpoint, resolve_device, resolve_precision
from fragment_llm.inference.prompt import clean_prompt, encode_prompt
from fragment_llm.inference.streaming import Generation
from fragment_llm.inference.token_sampling import check_sampling
from fragment_llm.model.gpt import GPT

log = logging.getLogger(__name__)


class LoadedModel:
    """A trained GPT with its tokenizer, on a device, ready to generate."""

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        checkpoint_path: Path | None,
        max_prompt_chars: int = GenerateConfig.max_prompt_chars,
        max_prompt_tokens: int = GenerateConfig.max_prompt_tokens,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.checkpoint_path = checkpoint_path
        self.max_prompt_chars = max_prompt_chars
        self.max_prompt_tokens = max_prompt_tokens

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    @overload
    def generate(self, prompt: str | None = None, *, num_samples: None = None, **settings: Any) -> str: ...
    @overload
    def generate(self, prompt: str | None = None, *, num_samples: int, **settings: Any) -> list[str]: ...

    def generate(self, prompt: str | None = None, *, num_samples: int | None = None, **settings: Any):
        """The prompt followed by its continuation; with `num_samples`, a list of that many.

        `prompt=None` generates unconditionally. Settings not given take SamplingConfig's defaults.
        """
        generation, prompt = self.prepare(prompt, sampling_config(**settings), num_samples or 1)
        for _ in generation:
            pass
        texts = [(prompt or "") + text for text in generation.texts]
        return texts if num_samples is not None else texts[0]

    def stream(self, prompt: str | None = None, **settings: Any) -> Iterator[str]:
        """The continuation of `prompt` piece by piece as it is generated (never half a character)."""
        generation, _ = self.prepare(prompt, sampling_config(**settings))
        for (piece,) in generation:
            if piece:
                yield piece

    def prepare(
        self,
        prompt: str | None,
        settings: SamplingConfig,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
    ) -> tuple[Generation, str | None]:
        """Validate and encode `prompt`; return a Generation ready to iterate, and the cleaned prompt.

        Without `generator`, one is seeded from `settings.seed` (or at random when it is None).
        """
        check_sampling(settings)
        if num_samples < 1:
            raise PromptError(f"num_samples={num_samples}: must be >= 1")
        if prompt is not None:
            prompt = clean_prompt(prompt, self.max_prompt_chars)
        ids = encode_prompt(self.tokenizer, prompt, self.block_size, settings, self.max_prompt_tokens)
        if generator is None:
            generator = make_generator(self.device, settings.seed)
        return Generation(self.model, self.tokenizer, ids, settings, num_samples, generator), prompt


def make_generator(device: torch.device, seed: int | None) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # nondeterministic
    else:
        generator.manual_seed(seed)
    return generator


def load_model(
    ckpt: str | os.PathLike,
    device: str = "auto",
    precision: str = "auto",
    max_prompt_chars: int = GenerateConfig.max_prompt_chars,
    max_prompt_tokens: int = GenerateConfig.max_prompt_tokens,
) -> LoadedModel:
    """Load a training checkpoint (a file, a run directory or a folder of runs) for generation.

    `device="auto"` picks CUDA, then MPS, then the CPU; `precision="auto"` picks bfloat16 (or
    float16) on GPUs and, on the CPU, float32 or bfloat16 by the rule in fragment_llm/precision.py.
    """
    check_prompt_limits(max_prompt_chars, max_prompt_tokens)
    target = resolve_device(device)
    if precision != "auto":
        resolve_precision(precision, target)  # a bad name fails before the checkpoint is read
    path = resolve_checkpoint(ckpt)
    model, tokenizer = load_checkpoint(path)
    dtype = resolve_precision(precision, target, model.config.n_embd)
    model.to(device=target, dtype=dtype)
    log.info(
        "Loaded %s: %.2fM parameters, context %d tokens, %s tokenizer (%d tokens), on %s in %s",
        path,
        model.num_params() / 1e6,
        model.config.block_size,
        tokenizer.kind,
        tokenizer.vocab_size,
        target,
        str(dtype).removeprefix("torch."),
    )
    return LoadedModel(model, tokenizer, path, max_prompt_chars, max_prompt_tokens)


def check_prompt_limits(max_prompt_chars: int, max_prompt_tokens: int) -> None:
    for key, value in (("max_prompt_chars", max_prompt_chars), ("max_prompt_tokens", max_prompt_tokens)):
        if value < 1:
            raise ConfigError(f"{key}={value}: must be >= 1")


def sampling_config(source: Any = None, **overrides: Any) -> SamplingConfig:
    """A validated SamplingConfig from the fields of `source` (e.g. the generate config), then `overrides`.

    An unknown keyword is a TypeError that names it.
    """
    values = {f.name: getattr(source, f.name) for f in dataclasses.fields(SamplingConfig)} if source is not None else {}
    settings = SamplingConfig(**{**values, **overrides})
    # One string is one stop string; Hydra gives a ListConfig.
    settings.stop = [settings.stop] if isinstance(settings.stop, str) else list(settings.stop)
    check_sampling(settings)
    return settings
