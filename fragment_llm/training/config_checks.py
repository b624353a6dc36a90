"""Cross-field checks of a training config that a schema cannot express; each error names the key.

They live above the model (unlike the schemas in config.py) because the model's own
GPTConfig is the one set of rules for its shape and switches.
"""

from __future__ import annotations

from dataclasses import fields

from omegaconf import DictConfig

from fragment_llm.config import fail, validate_data_config
from fragment_llm.errors import ConfigError
from fragment_llm.model.gpt import GPTConfig
from fragment_llm.model.muon import NS_PRECONDITIONS


def validate_train_config(cfg: DictConfig) -> None:
    """Cross-field checks that a schema cannot express; raises ConfigError naming the key."""
    m, d, t, o, tr = cfg.model, cfg.data, cfg.tokenizer, cfg.optimizer, cfg.trainer
    validate_model_config(m)
    validate_data_config(d, t)
    if tr.accumulate_grad_batches <= 0:
        fail(
            "trainer.accumulate_grad_batches",
            tr.accumulate_grad_batches,
            "must be positive",
            "Use 1 for no accumulation",
        )
    if tr.max_steps <= 0 and not tr.fast_dev_run:
        fail(
            "trainer.max_steps",
            tr.max_steps,
            "must be positive (the LR schedule is defined over steps)",
            "Set e.g. trainer.max_steps=1000",
        )
    if o.lr <= 0 or o.min_lr < 0 or o.min_lr > o.lr:
        fail(
            "optimizer.min_lr",
            o.min_lr,
            f"must satisfy 0 <= min_lr <= lr (lr={o.lr}, which must be > 0)",
            "Lower optimizer.min_lr or raise optimizer.lr",
        )
    if o.warmup_steps < 0:
        fail("optimizer.warmup_steps", o.warmup_steps, "must be >= 0", "Use 0 for no warmup")
    if len(o.betas) != 2 or not all(0.0 <= b < 1.0 for b in o.betas):
        fail("optimizer.betas", list(o.betas), "must be two numbers in [0, 1)", "Use e.g. [0.9, 0.95]")
    if o.weight_decay < 0:
        fail("optimizer.weight_decay", o.weight_decay, "must be >= 0", "Use 0 to disable weight decay")
    validate_optimizer_choices(o)
    if o.name == "muon" and shards_parameters(tr.strategy):
        fail(
            "optimizer.name",
            o.name,
            "cannot train under FSDP: Newton-Schulz needs each matrix whole, FSDP gives every process a flat shard",
            "Use optimizer=adamw with trainer=fsdp",
        )
    if cfg.resume is not None and cfg.ckpt_path is not None:
        fail("resume", cfg.resume, "and ckpt_path are both set", "Give one: resume=<run dir> or ckpt_path=last|<file>")
    if cfg.tokens_per_step is not None:
        if cfg.tokens_per_step <= 0:
            fail("tokens_per_step", cfg.tokens_per_step, "must be positive", "Use e.g. tokens_per_step=491520")
        if tr.accumulate_grad_batches != 1:
            fail(
                "trainer.accumulate_grad_batches",
                tr.accumulate_grad_batches,
                "is set together with tokens_per_step, which derives it",
                "Give only one of them",
            )
    samples = cfg.callbacks.get("samples")
    if samples is not None:
        if samples.every_n_validations < 1:
            fail("callbacks.samples.every_n_validations", samples.every_n_validations, "must be >= 1", "Use e.g. 1")
        if samples.max_new_tokens < 1:
            fail("callbacks.samples.max_new_tokens", samples.max_new_tokens, "must be >= 1", "Use e.g. 200")
        if samples.temperature < 0:
            fail("callbacks.samples.temperature", samples.temperature, "must be >= 0", "Use 0 for greedy")


def shards_parameters(strategy: object) -> bool:
    """Whether trainer.strategy (a name, or a config with _target_) is FSDP, which shards every parameter."""
    name = strategy.get("_target_", "") if isinstance(strategy, DictConfig) else strategy
    return "fsdp" in str(name).lower()


def validate_model_config(m: DictConfig) -> None:
    """The model's shape and switches, checked by GPTConfig itself (one set of rules), named as model.<key>."""

    known = {f.name for f in fields(GPTConfig)} - {"vocab_size"}
    try:
        GPTConfig(vocab_size=1, **{k: v for k, v in m.items() if k in known})
    except ValueError as e:
        key, _, why = str(e).partition(": ")
        raise ConfigError(
            f"model.{key}: {why}. Change it on the command line (model.{key.split('=')[0]}=...) or choose "
            "another arch=... / model=... preset"
        ) from None


def validate_optimizer_choices(o: DictConfig) -> None:
    if o.name not in ("adamw", "muon"):
        fail("optimizer.name", o.name, "is not a known optimizer", "Use optimizer=adamw or optimizer=muon")
    if o.schedule not in ("cosine", "wsd"):
        fail("optimizer.schedule", o.schedule, "is not a known schedule", "Use cosine or wsd")
    if not 0.0 <= o.decay_fraction <= 1.0:
        fail("optimizer.decay_fraction", o.decay_fraction, "must be in [0, 1]", "Use e.g. 0.5")
    for key in ("adam_lr", "head_lr"):
        if o[key] is not None and o[key] <= 0:
            fail(f"optimizer.{key}", o[key], "must be > 0", "Use e.g. 0.01")
    for key in ("momentum", "momentum_warmup_start"):
        if not 0.0 <= o[key] < 1.0:
            fail(f"optimizer.{key}", o[key], "must be in [0, 1)", "Use e.g. 0.95")
    if o.momentum_warmup_steps < 0:
        fail("optimizer.momentum_warmup_steps", o.momentum_warmup_steps, "must be >= 0", "Use 0 for no warm-up")
    if not 1 <= o.ns_steps < 100:
        fail("optimizer.ns_steps", o.ns_steps, "must be between 1 and 99", "Use 5")
    if o.ns_precondition not in NS_PRECONDITIONS:
        fail("optimizer.ns_precondition", o.ns_precondition, "is not a known preconditioning", "Use frobenius or aol")
