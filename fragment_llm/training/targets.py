"""Only our own targets are instantiated: every `_target_` must be one that the project's configs name.

The allow-list is read once from the YAML files under conf/ and the `_target_` defaults of the
schema (config.py). `check_targets` walks a whole composed, resolved config, so a target that
arrives any other way (an interpolation, a crafted file, a typo) is refused before
`hydra.utils.instantiate` ever sees it, however the config was built (fresh or resumed).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from fragment_llm import config as schema
from fragment_llm.errors import ConfigError
from fragment_llm.training.override_guard import CONF_DIR

TARGET = "_target_"


@cache
def allowed_targets() -> frozenset[str]:
    found: set[str] = set()
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        found.update(target for _, target in _targets(yaml.safe_load(path.read_text(encoding="utf-8"))))
    for obj in vars(schema).values():
        if isinstance(obj, type) and dataclasses.is_dataclass(obj):
            found.update(f.default for f in dataclasses.fields(obj) if f.name == TARGET and isinstance(f.default, str))
    return frozenset(found)


def _targets(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(key path, value) of every `_target_` in a plain nested config."""
    if isinstance(node, dict):
        found = [(f"{path}{TARGET}", node[TARGET])] if TARGET in node else []
        for key, value in node.items():
            found += _targets(value, f"{path}{key}.")
        return found
    if isinstance(node, list):
        return [hit for i, item in enumerate(node) for hit in _targets(item, f"{path}{i}.")]
    return []


def check_targets(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key of the first `_target_` that conf/ does not define (resolves `cfg`)."""
    allowed = allowed_targets()
    for key, target in _targets(OmegaConf.to_container(cfg, resolve=True)):
        if not isinstance(target, str) or target not in allowed:
            raise ConfigError(
                f"{key}={target!r}: not a target this project's configs define, so it is not instantiated. "
                "Choose one of the configs in conf/ (e.g. trainer=fsdp) instead of naming code."
            )
