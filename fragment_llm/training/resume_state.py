"""The plain state a resumed run reads from its checkpoint, checked as data before Lightning or our callbacks see it.

Besides tensors (model/checkpoint_shapes.py) a checkpoint holds counters, seeds, generator states
and Lightning's loop progress. A crafted or damaged one (a string for a step, a negative position,
a generator state of the wrong size, keys missing) would otherwise fail deep inside Lightning,
numpy or torch; here it is refused in one line naming the file and the field.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from fragment_llm.checkpoint_file import MAX_COUNT, check_count, check_mapping, field_error
from fragment_llm.data.datamodule import TextDataModule
from fragment_llm.data.datamodule import check_state as check_datamodule_state
from fragment_llm.errors import CheckpointError
from fragment_llm.model.muon import check_muon_options
from fragment_llm.training.rng import check_rng_state

ADVICE = "not a checkpoint this project wrote (or a damaged one); start a fresh run or resume from another checkpoint"
_OUR_CALLBACKS = {"CarryRNGState": lambda s: check_rng_state(s.get("rng")) if s.get("rng") is not None else None}
_NUMBER = (int, float)


def check_resume_state(checkpoint: dict[str, Any], path: Path) -> None:
    """Every plain field a resume reads, except Lightning's loop state (check_loop_state, which needs the trainer)."""
    with _naming(path):
        check_count("global_step", checkpoint.get("global_step"))
        check_count("epoch", checkpoint.get("epoch"))
        version = checkpoint.get("pytorch-lightning_version")
        try:  # Lightning parses it to pick its migrations
            Version(version if isinstance(version, str) and len(version) < 64 else "?")
        except InvalidVersion:
            raise field_error("pytorch-lightning_version", version, "must be a version number") from None
        hparams = check_mapping("hyper_parameters", checkpoint.get("hyper_parameters"))
        for key in ("model", "optimizer", "run_config"):
            check_mapping(f"hyper_parameters.{key}", hparams.get(key))
        overrides = hparams.get("overrides") or []
        if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
            raise field_error("hyper_parameters.overrides", overrides, "must be a list of strings")
        if not isinstance(checkpoint.get("tokenizer"), str):
            raise field_error("tokenizer", checkpoint.get("tokenizer"), "must be the tokenizer's JSON text")
        for key in ("run_record", TextDataModule.__qualname__):
            if key in checkpoint:
                check_mapping(key, checkpoint[key])
        check_datamodule_state(checkpoint.get(TextDataModule.__qualname__, {}))
        _check_callbacks(check_mapping("callbacks", checkpoint.get("callbacks")))
        _check_optimizer_states(checkpoint.get("optimizer_states"), checkpoint.get("lr_schedulers"))
        check_mapping("loops", checkpoint.get("loops"))


def check_loop_state(checkpoint: dict[str, Any], expected: dict[str, Any], path: Path) -> None:
    """Lightning's fit-loop progress against `expected`, a fresh trainer's `fit_loop.state_dict()`: the same keys
    (Lightning indexes them; a stray key in a progress tracker would become an attribute of it), counters where it
    has counters, flags where it has flags."""
    with _naming(path):
        got = check_mapping("loops", checkpoint.get("loops")).get("fit_loop")
        _match(expected, got, "loops.fit_loop", depth=0)


def _match(expected: Any, got: Any, field: str, depth: int) -> None:
    if isinstance(expected, dict):
        check_mapping(field, got)
        if missing := [k for k in expected if k not in got]:
            raise field_error(field, sorted(got)[:8], f"lacks {', '.join(map(str, missing[:3]))}")
        extra = [k for k in got if k not in expected]
        for key in extra:  # only a loop's own level (Lightning ignores what it does not ask for) or its state_dict
            if depth > 0 and not field.endswith("state_dict"):
                raise field_error(f"{field}.{key}", got[key], "unknown key")
            _plain(got[key], f"{field}.{key}")
        for key, value in expected.items():
            _match(value, got[key], f"{field}.{key}", depth + 1)
    elif isinstance(expected, bool):
        if type(got) is not bool:
            raise field_error(field, got, "must be true or false")
    elif isinstance(expected, int):
        check_count(field, got)
    else:
        _plain(got, field)


def _plain(value: Any, field: str, depth: int = 0) -> None:
    """Scalars, or small lists and mappings of them (loop state Lightning passes on without reading)."""
    if value is None or type(value) in (bool, int, float, str):
        return
    if isinstance(value, (list, dict)) and depth < 4 and len(value) <= 1024:
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            _plain(item, f"{field}.{key}", depth + 1)
        return
    raise field_error(field, value, "must be plain data (numbers, strings, small lists and mappings)")


def _check_callbacks(callbacks: dict[str, Any]) -> None:
    for name, state in callbacks.items():
        check_mapping(f"callbacks.{str(name)[:60]}", state)
        if name in _OUR_CALLBACKS:
            _OUR_CALLBACKS[name](state)
    if (best := callbacks.get("HParamsWithBestLoss", {}).get("best")) is not None and type(best) not in _NUMBER:
        raise field_error("callbacks.HParamsWithBestLoss.best", best, "must be a number or null")
    if "validations" in (samples := callbacks.get("TextSamples", {})):
        check_count("callbacks.TextSamples.validations", samples["validations"])


def _check_optimizer_states(optimizers: Any, schedulers: Any) -> None:
    """The containers torch's Optimizer/LRScheduler.load_state_dict index (they check the tensors themselves)."""
    if not isinstance(optimizers, list) or len(optimizers) > 16:
        raise field_error("optimizer_states", optimizers, "must be a list of optimizer states")
    for i, opt in enumerate(optimizers):
        check_mapping(f"optimizer_states[{i}].state", check_mapping(f"optimizer_states[{i}]", opt).get("state"))
        groups = opt.get("param_groups")
        if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
            raise field_error(f"optimizer_states[{i}].param_groups", groups, "must be a list of mappings")
        for j, group in enumerate(groups):
            ids = group.get("params")
            if not isinstance(ids, list) or not all(type(p) is int and 0 <= p < MAX_COUNT for p in ids):
                raise field_error(f"optimizer_states[{i}].param_groups[{j}].params", ids, "must be parameter ids")
            if group.get("kind") == "muon":  # torch restores a group's options from the file: no hang, no junk
                check_muon_options(f"optimizer_states[{i}].param_groups[{j}]", group)
    if not isinstance(schedulers, list) or not all(isinstance(s, dict) for s in schedulers):
        raise field_error("lr_schedulers", schedulers, "must be a list of scheduler states")


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Adds the file and what to do to a CheckpointError raised by a field check."""
    try:
        yield
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}: {ADVICE}") from None
