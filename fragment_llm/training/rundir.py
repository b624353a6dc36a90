"""Run directories: where a run lives, which run a resume continues, and what must never be overwritten.

Hydra decides the run directory before any of our code runs, so these rules are Hydra
resolvers used by `conf/hydra/default.yaml`:

- `fragment_run_dir`: `resume=<run dir>` and `ckpt_path=last|<run>/checkpoints/x.ckpt` continue
  in the run's own directory; anything else gets a fresh time-stamped one. All processes of a
  torchrun/srun job get the same one (launch.py).
- `fragment_hydra_subdir`: Hydra's record of the command (`.hydra/`) goes to `.hydra/<time>/`
  when the directory already has one, so resuming (or a refused start) never overwrites it;
  only the first process of a torchrun/srun job writes it.
- `fragment_job_name`: a sweep job's subdirectory, named by its number and the values it sweeps.

Resolvers never raise (Hydra would print a deep traceback); when they cannot find what was
asked for they fall back to a fresh directory and `train` reports the problem in one line.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.training.launch import agreed_run_dir, is_first_process

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
# What a started run leaves in its directory; a fresh run refuses a directory holding any of them.
RUN_MARKERS = ("config.yaml", CHECKPOINTS, "tensorboard")
MAX_JOB_NAME = 120  # characters; file systems allow 255, and paths stay readable
UNNAMED_KEYS = {"data.path", "paths.root_dir", "paths.log_dir", "paths.cache_dir", "paths.output_dir"}


def newest_run(runs_root: str | Path) -> Path | None:
    """The run under `runs_root` (sweep jobs included) whose last.ckpt was written most recently."""
    root = Path(runs_root).expanduser()
    found = list(root.glob(f"**/{CHECKPOINTS}/{LAST}")) if root.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime_ns).parent.parent.resolve() if found else None


def run_dir_of_checkpoint(ckpt: str | Path) -> Path | None:
    """`<run>` for a file at `<run>/checkpoints/<name>.ckpt`, else None (a loose file starts a new run)."""
    path = Path(ckpt).expanduser().resolve()
    return path.parent.parent if path.parent.name == CHECKPOINTS else None


def _run_dir(runs_root: str, fresh: str, resume: str | None, ckpt_path: str | None) -> str:
    # Every process of a torchrun/srun job must land in the same directory: see launch.py.
    return agreed_run_dir(runs_root, fresh, lambda fresh_dir: _choose_run_dir(runs_root, fresh_dir, resume, ckpt_path))


def _choose_run_dir(runs_root: str, fresh: str, resume: str | None, ckpt_path: str | None) -> str:
    found = None
    if resume is not None and Path(resume).expanduser().is_dir():
        found = Path(resume).expanduser().resolve()
    elif ckpt_path == "last":
        found = newest_run(runs_root)
    elif ckpt_path is not None and Path(ckpt_path).expanduser().is_file():
        found = run_dir_of_checkpoint(ckpt_path)
    # Hydra opens its log and record files in this directory before our code runs: never one holding links.
    return str(found) if found and not links_in_run_dir(found) else fresh


def _hydra_subdir(output_dir: str, stamp: str) -> str | None:
    if not is_first_process():  # the other ranks of a torchrun/srun job: rank 0 keeps the record
        return None
    return f".hydra/{stamp}" if (Path(output_dir) / ".hydra" / "config.yaml").is_file() else ".hydra"


def _swept_on_command_line() -> set[str]:
    """Keys given several values on this command line (`optimizer.lr=1e-3,3e-3`, `range(...)`, `choice(...)`)."""
    parser, swept = OverridesParser.create(), set()
    for arg in sys.argv[1:]:
        try:
            override = parser.parse_override(arg)
        except Exception:  # flags such as -m, or a value belonging to one
            continue
        if override.is_sweep_override():
            swept.add(override.key_or_group)
    return swept


def _job_name(num: int, overrides: list[str], sweeper_params: dict | None) -> str:
    """`3_model.n_layer=4,optimizer.lr=0.001`: the job number and the values it sweeps over.

    Swept keys are those given several values on the command line or in `hydra.sweeper.params`
    (Optuna's search space); if none can be told apart, all overrides but paths are named.
    The result is one safe path component of at most MAX_JOB_NAME characters.
    """
    parsed = [OverridesParser.create().parse_override(o) for o in overrides]
    swept = set(sweeper_params or {}) | _swept_on_command_line()
    chosen = [o for o in parsed if o.key_or_group in swept] or [o for o in parsed if o.key_or_group not in UNNAMED_KEYS]
    named = ",".join(f"{o.key_or_group}={_short(o.value())}" for o in chosen)
    name = re.sub(r"[^\w.,=+\-]", "_", f"{num}_{named}" if named else str(num))
    return name[:MAX_JOB_NAME]


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)  # Optuna's lr=0.0040155436... -> 0.004016


def register_run_dir_resolvers() -> None:
    # Cached: Hydra (and Lightning's DDP launcher) may resolve these more than once; the answer must not change.
    for name, fn in (
        ("fragment_run_dir", _run_dir),
        ("fragment_hydra_subdir", _hydra_subdir),
        ("fragment_job_name", _job_name),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)


def resume_checkpoint(resume: str | None, ckpt_path: str | None, run_dir: Path, runs_root: Path) -> Path | None:
    """The checkpoint a run continues from, or None for a fresh run; a clear error when it is missing."""
    if resume is not None:
        resume_dir = Path(resume).expanduser().resolve()
        ckpt = resume_dir / CHECKPOINTS / LAST
        if not ckpt.is_file():
            raise CheckpointError(
                f"resume={resume}: no {CHECKPOINTS}/{LAST} there. Give the directory of a run that saved "
                "a checkpoint (it prints 'Run directory: ...'), or drop resume to start a fresh run."
            )
        refuse_links_in_run_dir(resume_dir)  # (Hydra was then given a fresh directory: see _run_dir)
        if resume_dir != run_dir:
            raise ConfigError(
                f"resume={resume} but paths.output_dir={run_dir}: a resumed run continues in its own directory. "
                "Drop the paths.output_dir override."
            )
        return ckpt
    if ckpt_path == "last":
        ckpt = run_dir / CHECKPOINTS / LAST
        if not ckpt.is_file():
            if found := newest_run(runs_root):
                refuse_links_in_run_dir(found)
            raise CheckpointError(
                f"ckpt_path=last: found no run with a {CHECKPOINTS}/{LAST} under {runs_root}. Name the task of the "
                "run (task_name=... or experiment=...), give resume=<run dir>, or drop ckpt_path to start afresh."
            )
        return ckpt
    if ckpt_path is not None:
        ckpt = Path(ckpt_path).expanduser().resolve()
        if not ckpt.is_file():
            raise CheckpointError(
                f"ckpt_path={ckpt_path}: no such file. Give a .ckpt file, 'last', or resume=<run dir>."
            )
        if owner := run_dir_of_checkpoint(ckpt):
            refuse_links_in_run_dir(owner)
        return ckpt
    return None


def links_in_run_dir(run_dir: Path, limit: int = 100_000) -> list[Path]:
    """Symbolic links anywhere in a run directory: a shared run directory could use one to make a resumed
    run write (logs, checkpoints, Hydra's record) or delete files outside it."""
    links, seen = [], 0
    for directory, dirs, files in os.walk(run_dir):  # does not follow links into other directories
        for name in dirs + files:
            seen += 1
            if (Path(directory) / name).is_symlink():
                links.append(Path(directory) / name)
        if seen > limit:
            break
    return links


def refuse_links_in_run_dir(run_dir: Path) -> None:
    if links := links_in_run_dir(run_dir):
        raise CheckpointError(
            f"{run_dir}: refused to resume: the run directory holds symbolic links ({', '.join(map(str, links[:3]))}), "
            "through which a resumed run could write or delete files elsewhere. Copy the run without links."
        )


# The paths a ModelCheckpoint callback keeps in its state; Lightning may delete those files later.
_CHECKPOINT_PATH_FIELDS = ("best_model_path", "kth_best_model_path", "last_model_path")


def check_stored_checkpoint_paths(checkpoint: dict, checkpoints_dir: Path, source: Path) -> None:
    """Refuse checkpoint-callback state naming files Lightning's own guard would wrongly delete when newer
    checkpoints replace them: paths with `..` or a URL scheme. (It deletes only files lexically inside the
    checkpoint directory, and refuse_links_in_run_dir keeps links out of it.)"""
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if not (isinstance(name, str) and name.startswith("ModelCheckpoint") and isinstance(state, dict)):
            continue
        best_k = state.get("best_k_models") or {}
        paths = [state.get(f) for f in _CHECKPOINT_PATH_FIELDS]
        paths += list(best_k) if isinstance(best_k, dict) else [best_k]
        for path in paths:
            if path in (None, ""):
                continue
            if not isinstance(path, str) or "://" in path or ".." in Path(path).parts:
                raise CheckpointError(
                    f"{source}: refused: its checkpoint-callback state names {str(path)[:200]!r}, not a file of "
                    f"{checkpoints_dir}; a resumed run would delete it when a newer checkpoint replaces it"
                )


def refuse_existing_run(run_dir: Path) -> None:
    """A fresh run never writes into a directory where another run already left checkpoints or logs."""
    present = [name for name in RUN_MARKERS if (run_dir / name).exists()]
    if present:
        raise ConfigError(
            f"paths.output_dir={run_dir} already holds a run ({', '.join(present)}); refusing to overwrite it. "
            f"Continue it with resume={run_dir}, or start in another directory."
        )


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Delete temporary files left by a save that was killed before its rename (see checkpoint_io)."""
    stale = sorted((run_dir / CHECKPOINTS).glob(".*.ckpt.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
