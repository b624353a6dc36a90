"""Inference: load a self-describing checkpoint safely and sample text from it.

A checkpoint is opened with `torch.load(weights_only=True)`: only tensors and plain
containers are accepted, so a crafted file cannot run code. The model config and the
tokenizer come from the checkpoint itself (plain dicts and JSON text); nothing from it
is ever passed to `hydra.utils.instantiate`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fragment_llm.data.tokenizer import Tokenizer, load_tokenizer, tokenizer_from_json
from fragment_llm.errors import CheckpointError, PromptError
from fragment_llm.model.gpt import GPT, GPTConfig

log = logging.getLogger(__name__)


def find_latest_checkpoint(runs_dir: str | os.PathLike) -> Path:
    """The most recently written `last.ckpt` below `runs_dir` (runs and sweep jobs alike)."""
    runs_dir = Path(runs_dir).expanduser().resolve()
    candidates = list(runs_dir.glob("**/checkpoints/last.ckpt")) if runs_dir.is_dir() else []
    if not candidates:
        raise CheckpointError(
            f"no trained run found under {runs_dir} (looked for */checkpoints/last.ckpt). "
            "Train one with `python train.py`, or pass ckpt=/path/to/file.ckpt."
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def resolve_checkpoint(ckpt: str | os.PathLike) -> Path:
    """Accept a checkpoint file, a run directory, or a directory of runs (its newest last.ckpt)."""
    path = Path(ckpt).expanduser().resolve()
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        return find_latest_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt={ckpt!s}: no checkpoint file there. Pass a .ckpt file or a run directory.")
    return path


@dataclass
class LoadedModel:
    model: GPT
    tokenizer: Tokenizer
    checkpoint_path: Path
    device: torch.device

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    def encode_prompt(self, prompt: str | None) -> list[int]:
        """Validate and encode a prompt; None means unconditional generation from <|endoftext|>."""
        if prompt is None:
            return [self.tokenizer.eot_id]
        if not prompt.strip():
            raise PromptError(
                "prompt is empty. Give prompt='some text', or leave prompt unset (null) for unconditional generation."
            )
        ids = self.tokenizer.encode(prompt)
        if len(ids) > self.block_size:
            raise PromptError(
                f"prompt is {len(ids)} tokens but this model's context (block_size) is "
                f"{self.block_size} tokens. Shorten the prompt."
            )
        return ids

    @torch.no_grad()
    def generate(
        self,
        prompt: str | None = None,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int | None = None,
        num_samples: int = 1,
    ) -> list[str]:
        """Return `num_samples` texts: the prompt followed by `max_new_tokens` sampled tokens."""
        check_sampling(max_new_tokens, temperature, top_k, num_samples)
        ids = self.encode_prompt(prompt)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        idx = torch.tensor([ids] * num_samples, dtype=torch.long, device=self.device)  # (N, T)
        out = self.model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
        skip = 1 if prompt is None else 0  # the <|endoftext|> that started unconditional text
        return [self.tokenizer.decode(row[skip:].tolist()) for row in out]


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None, num_samples: int) -> None:
    if max_new_tokens < 0:
        raise PromptError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if temperature < 0:
        raise PromptError(f"temperature={temperature}: must be >= 0 (0 is greedy decoding)")
    if top_k is not None and top_k < 0:
        raise PromptError(f"top_k={top_k}: must be >= 0 (0 or null disables top-k)")
    if num_samples < 1:
        raise PromptError(f"num_samples={num_samples}: must be >= 1")


def load_model(ckpt: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a training checkpoint (file or run directory) for generation."""
    path = resolve_checkpoint(ckpt)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises pickle.UnpicklingError for anything beyond tensors and plain data
        if type(e).__name__ == "UnpicklingError":
            raise CheckpointError(
                f"{path}: refused to load: it holds objects other than tensors and plain data. "
                "Only checkpoints written by Fragment_LLM training are accepted."
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    config = _model_config(checkpoint, path)
    tokenizer = _tokenizer(checkpoint, path)
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer has {tokenizer.vocab_size} tokens but the model was trained with "
            f"vocab_size={config.vocab_size}; they do not belong together."
        )
    model = GPT(config)
    state = {k.removeprefix("model."): v for k, v in checkpoint.get("state_dict", {}).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the stored model config ({e})") from None
    device = torch.device(device)
    model.to(device).eval()
    return LoadedModel(model, tokenizer, path, device)


def _model_config(checkpoint: Any, path: Path) -> GPTConfig:
    try:
        stored = checkpoint["hyper_parameters"]["model"]
        known = {f.name for f in dataclasses.fields(GPTConfig)}
        return GPTConfig(**{k: v for k, v in stored.items() if k in known})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: no usable model config in the checkpoint ({e!r})") from None


def _tokenizer(checkpoint: dict, path: Path) -> Tokenizer:
    text = checkpoint.get("tokenizer")
    if isinstance(text, str):
        return tokenizer_from_json(text, source=f"{path} (embedded tokenizer)")
    beside = path.parent.parent / "tokenizer.json"  # <run>/checkpoints/x.ckpt -> <run>/tokenizer.json
    if beside.is_file():
        return load_tokenizer(beside)
    raise CheckpointError(f"{path}: carries no tokenizer and there is no {beside}")


def run_generate(cfg: Any) -> list[str]:
    """The `generate.py` job: resolve the checkpoint, load it, sample as `cfg` says."""
    if cfg.ckpt is None:
        path = find_latest_checkpoint(cfg.runs_dir)
        log.info("No ckpt given; using the newest run's checkpoint: %s", path)
    else:
        path = resolve_checkpoint(cfg.ckpt)
    check_sampling(cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.num_samples)
    loaded = load_model(path)
    return loaded.generate(
        cfg.prompt,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        seed=cfg.seed,
        num_samples=cfg.num_samples,
    )
