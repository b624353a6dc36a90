"""Resuming a run with its own settings: the overrides it was started with, plus today's.

A checkpoint stores the command-line overrides of its run (plain strings, in its
hyperparameters). `python train.py ckpt_path=last trainer.max_steps=5000` re-composes the
config from `conf/` with the run's overrides followed by the new ones, so the model, data
and optimizer match the run without retyping them, and any value can still be changed.

The stored overrides come from a file that may have been crafted, so each one is checked as
plain data for our own schema (override_guard.py) before anything is composed: a checkpoint
cannot add config code, name a class or function, or choose where data is read or written
(`data.path` and the other location keys come from today's command line).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from fragment_llm.errors import CheckpointError
from fragment_llm.training.checkpoint_io import load_checkpoint_safely
from fragment_llm.training.override_guard import check_stored_overrides
from fragment_llm.training.rundir import resume_checkpoint

log = logging.getLogger(__name__)

RESUME_KEYS = ("ckpt_path", "resume")


def _key(override: str) -> str:
    return OverridesParser.create().parse_override(override).key_or_group


def without_resume_keys(overrides: list[str]) -> list[str]:
    """The overrides that describe the run itself (not how this command found it)."""
    return [o for o in overrides if _key(o) not in RESUME_KEYS]


def stored_overrides(checkpoint: dict[str, Any], path: Path, now: list[str]) -> list[str]:
    """The run's overrides, each checked as plain data, except those that `now` (today's overrides) replaces."""
    hparams = checkpoint.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path}: its hyper_parameters are not a mapping; refused")
    return check_stored_overrides(hparams.get("overrides") or [], {_key(o) for o in now}, path)


def merge_overrides(stored: list[str], now: list[str]) -> list[str]:
    """The run's overrides, then today's; a key given today replaces the run's value for it."""
    given_now = {_key(o) for o in now}
    return [o for o in without_resume_keys(stored) if _key(o) not in given_now] + list(now)


def recompose_for_resume(cfg: DictConfig, overrides_now: list[str]) -> tuple[DictConfig, list[str]]:
    """Inside a Hydra app: the config of the run being resumed, with `overrides_now` applied on top.

    Returns the new config and the overrides that describe the run (for its next checkpoints).
    A fresh run (no resume, no ckpt_path) is returned unchanged.
    """
    if cfg.resume is None and cfg.ckpt_path is None:
        return cfg, overrides_now
    run_dir = Path(cfg.paths.output_dir).resolve()
    ckpt = resume_checkpoint(cfg.resume, cfg.ckpt_path, run_dir, Path(cfg.paths.log_dir).resolve() / cfg.task_name)
    checkpoint = load_checkpoint_safely(ckpt, mmap=True)  # memory-mapped: only the small metadata is read
    merged = merge_overrides(stored_overrides(checkpoint, ckpt, overrides_now), overrides_now)
    log.info("Resuming %s with overrides: %s", ckpt, " ".join(merged) or "(none)")
    return compose(config_name="train", overrides=merged), without_resume_keys(merged)


def config_changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """`key: old -> new` for every value that differs between two plain nested configs."""
    changes = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
