"""What a checkpoint's stored overrides may say: settings as data, never config code.

A resumed run re-applies the command-line overrides its checkpoint recorded. The checkpoint
may come from anyone, so each stored override is parsed with Hydra's own override parser and
the *parsed* value is checked (escapes are decoded by then) before anything is composed:

- a plain leaf key of the schema (`TrainConfig` in config.py) with a literal value of the
  key's type; keys typed `Any` (e.g. `trainer.strategy`) take a scalar or a list of scalars;
- or a config-group choice naming one of our own files, `conf/<group>/<name>.yaml`.

Refused: interpolations `${...}` anywhere in a value, `_target_` (as key or text), `+`/`++`/`~`
and `@package` overrides, sweeps and functions, unknown keys, Hydra's own settings, and
LOCATION_KEYS (where data is read from or written to). A stored override whose key today's
command line gives is dropped unchecked (today's value replaces it), which is also how a user
supplies a location key. Every refusal names the checkpoint and the entry.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable
from fnmatch import fnmatchcase
from functools import cache
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType

from fragment_llm.config import TrainConfig
from fragment_llm.errors import CheckpointError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
MAX_OVERRIDES = 1000
MAX_OVERRIDE_CHARS = 10_000
# Keys that say where data is read from or written to: a checkpoint may not choose them.
LOCATION_KEYS = (
    "data.path",
    "data.cache_dir",
    "tokenizer.path",
    "paths.*",
    "callbacks.*.dirpath",
    "callbacks.*.filename",
    "logger.save_dir",
    "logger.name",
    "logger.version",
    "trainer.default_root_dir",
    "init_from",
    "ckpt_path",
    "resume",
)
_LEAF_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*")  # no _target_-style or quoted names
_CHOICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")  # a file name in conf/<group>/, no paths
_SCALARS = (bool, int, float, str, type(None))


def is_location_key(key: str) -> bool:
    return any(fnmatchcase(key, pattern) for pattern in LOCATION_KEYS)


@cache
def config_groups() -> frozenset[str]:
    """Our config groups: the directories under conf/ (`trainer`, `model`, ...), Hydra's own excluded."""
    groups = {p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*") if p.is_dir()}
    return frozenset(g for g in groups if g != "hydra" and not g.startswith("hydra/"))


def check_stored_overrides(overrides: Any, given_now: Iterable[str], source: Path | str) -> list[str]:
    """The stored overrides of checkpoint `source`, each one checked; CheckpointError for the first that is not
    plain data for our own schema. `given_now`: the keys of today's command line (they win over stored ones)."""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise CheckpointError(f"{source}: its stored overrides are not a list of strings; refused")
    if len(overrides) > MAX_OVERRIDES:
        raise CheckpointError(f"{source}: {len(overrides)} stored overrides (at most {MAX_OVERRIDES}); refused")
    now = set(given_now)
    for text in overrides:
        check_stored_override(text, now, source)
    return overrides


def check_stored_override(text: str, given_now: set[str], source: Path | str) -> Override:
    """One stored override, parsed and checked (see the module docstring); returns Hydra's parse of it."""

    def refuse(why: str) -> CheckpointError:
        shown = text if len(text) <= 200 else text[:200] + "..."
        return CheckpointError(f"{source}: refused its stored override {shown!r}: {why}")

    if len(text) > MAX_OVERRIDE_CHARS:
        raise refuse(f"longer than {MAX_OVERRIDE_CHARS} characters")
    try:
        override = OverridesParser.create().parse_override(text)
    except Exception:  # Hydra's grammar errors, or a RecursionError on absurd nesting
        raise refuse("not a plain key=value override") from None
    if override.type != OverrideType.CHANGE:
        raise refuse("adding (+, ++) or deleting (~) keys changes the config's structure")
    if override.package is not None:
        raise refuse("@package moves a config to another place in the config")
    if override.value_type != ValueType.ELEMENT:
        raise refuse("a sweep or function (choice, range, glob, ...) is not a setting")
    key, value = override.key_or_group, override.value()
    if key in given_now:  # dropped: today's command line replaces it (resume.merge_overrides)
        return override
    _check_plain(value, refuse)
    if key == "hydra" or key.startswith(("hydra.", "hydra/")):
        raise refuse("Hydra's own settings are never taken from a checkpoint")
    if is_location_key(key):
        raise refuse(
            "a checkpoint may not choose where data is read from or written to. Give this key on the command "
            f"line (`{key}=...`; if you trust the stored value, repeat it) and it replaces the stored one"
        )
    if key in config_groups():
        _check_group_choice(key, value, refuse)
    else:
        _check_leaf(key, value, refuse)
    return override


def _check_plain(value: Any, refuse, depth: int = 0) -> None:
    """Literal data only, with no interpolation and no _target_ anywhere (dict keys included)."""
    if depth > 8:
        raise refuse("nested too deeply")
    if isinstance(value, str):
        if value == "???":
            raise refuse("??? (a missing value) is not a setting")
        if "${" in value:
            raise refuse("interpolations (${...}) are config code, not a setting")
        if "_target_" in value:
            raise refuse("_target_ names code to run")
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, refuse, depth + 1)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, refuse, depth + 1)
            _check_plain(v, refuse, depth + 1)
    elif not isinstance(value, _SCALARS):
        raise refuse(f"a {type(value).__name__} is not a literal value")


def _check_group_choice(group: str, choice: Any, refuse) -> None:
    if choice is None:  # selects no file
        return
    if not isinstance(choice, str) or not _CHOICE.fullmatch(choice):
        raise refuse(f"a choice of config group {group!r} must name one of its files (no paths)")
    if not (CONF_DIR / group / f"{choice}.yaml").is_file():
        raise refuse(f"conf/{group}/ has no {choice}.yaml")


def _check_leaf(key: str, value: Any, refuse) -> None:
    if not _LEAF_KEY.fullmatch(key):
        raise refuse(f"{key!r} is not a plain config key")
    kind = schema_type(key)
    if kind is None:
        raise refuse(f"{key!r} is not a key of the training config")
    if not _fits(value, kind):
        raise refuse(f"{value!r} is not a literal value of {key}'s type ({_type_name(kind)})")


def schema_type(key: str) -> Any:
    """The type the schema gives `key` (a dotted path into TrainConfig), or None when there is no such key."""
    kind: Any = TrainConfig
    for part in key.split("."):
        cls = _dataclass_in(kind)
        if cls is None:
            return None
        fields = _fields(cls)
        if part not in fields:
            return None
        kind = fields[part]
    return kind


@cache
def _fields(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _members(kind: Any) -> tuple[Any, ...]:
    return typing.get_args(kind) if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union else ()


def _dataclass_in(kind: Any) -> type | None:
    for k in _members(kind) or (kind,):
        if dataclasses.is_dataclass(k):
            return k
    return None


def _fits(value: Any, kind: Any) -> bool:
    """Whether `value` is a literal of type `kind` (a node of the schema takes only null, where it may be null)."""
    if kind is Any:  # a scalar or a list of scalars; never a mapping (it could be instantiated)
        return isinstance(value, _SCALARS) or (isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value))
    if members := _members(kind):
        return any(_fits(value, m) for m in members)
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:  # OmegaConf stores 32 as "32" in a str field (trainer.precision=32)
        return isinstance(value, (bool, int, float, str))
    if typing.get_origin(kind) is list:
        (item,) = typing.get_args(kind)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    return False  # a config node (dataclass) other than null


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")
