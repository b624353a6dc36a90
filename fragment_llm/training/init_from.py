"""`train.py init_from=<Hugging Face model dir>`: fine-tune a pretrained GPT-2, Llama or Qwen3 on your text.

The directory decides the model and the tokenizer: its config.json gives the shape and the
switches (model.block_size, the training context, and model.dropout stay yours), and
tokenizer.path is pointed at it, so the corpus is encoded with the model's own tokenizer.
The weights are read through interop/hf_dir.py's checks once the model is built; a resumed
run reads only the config (its checkpoint holds the weights). The run's checkpoints are
ordinary checkpoints: they resume, sample and export like any other.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from fragment_llm.data.tokenizer import Tokenizer
from fragment_llm.errors import ConfigError
from fragment_llm.interop.hf_dir import HFModelDir
from fragment_llm.model.gpt import GPT, GPTConfig

log = logging.getLogger(__name__)

# What the directory decides; block_size and dropout are the user's, vocab_size comes with the weights.
ARCH_KEYS = tuple(
    f.name for f in dataclasses.fields(GPTConfig) if f.name not in ("vocab_size", "block_size", "dropout")
)


def apply_init_from(cfg: DictConfig, overrides: list[str]) -> HFModelDir | None:
    """Open and check `cfg.init_from` (None: a run from random weights), then set cfg.model's shape and
    switches and cfg.tokenizer.path from it."""
    if cfg.init_from is None:
        return None
    pretrained = HFModelDir.open(cfg.init_from)
    config = pretrained.gpt_config(cfg.model.block_size, cfg.model.dropout)
    path = cfg.tokenizer.path
    if path is not None and Path(path).expanduser().resolve() != pretrained.path:
        raise ConfigError(
            f"tokenizer.path={path}: init_from={cfg.init_from} brings its own tokenizer, which the model was "
            "trained with; leave tokenizer.path unset"
        )
    cfg.tokenizer.path = str(pretrained.path)
    parser = OverridesParser.create()
    ignored = [o for o in overrides if _overrides_arch(parser.parse_override(o).key_or_group)]
    if ignored:
        log.warning("init_from: the model's shape and switches come from %s/config.json; ignoring %s",
                    pretrained.path, " ".join(ignored))  # fmt: skip
    for key in ARCH_KEYS:
        cfg.model[key] = getattr(config, key)
    if cfg.optimizer.name == "muon":  # the default run's optimizer, not a fine-tuning one
        log.warning("init_from with optimizer=muon (lr=%s): Muon's orthogonalized steps move every matrix of the "
                    "pretrained model as far as training from scratch does; experiment=finetune (or "
                    "optimizer=adamw with a small optimizer.lr) adapts it instead", cfg.optimizer.lr)  # fmt: skip
    log.info("init_from %s: a %s model, %s", pretrained.path, pretrained.family,
             ", ".join(f"{k}={getattr(config, k)}" for k in ("n_layer", "n_head", "n_embd", "n_kv_head")))  # fmt: skip
    return pretrained


def _overrides_arch(key: str) -> bool:
    return key in ("arch", "model") or key.removeprefix("model.") in ARCH_KEYS


def model_vocab_size(pretrained: HFModelDir | None, tokenizer: Tokenizer) -> int:
    """The embedding's rows: the tokenizer's size, or the pretrained model's (which may pad it)."""
    if pretrained is None:
        return tokenizer.vocab_size
    if tokenizer.vocab_size > pretrained.config.vocab_size:
        raise ConfigError(
            f"init_from={pretrained.path}: its tokenizer has {tokenizer.vocab_size} tokens but the model only "
            f"{pretrained.config.vocab_size} embeddings; the directory's files do not belong together"
        )
    return pretrained.config.vocab_size


def load_pretrained_weights(model: GPT, pretrained: HFModelDir) -> None:
    """Replace the model's random initial weights with the pretrained ones (upcast to float32)."""
    model.load_state_dict(pretrained.state_dict(model.config))
    log.info("Loaded the weights of %s (%.1fM parameters)", pretrained.path, model.num_params() / 1e6)
