"""Jobs that an outside launcher starts as many processes (torchrun, srun): what they must agree on before training.

Every process of such a job runs `train.py` from the start, Hydra included, and Hydra picks the
run directory before any training code runs. A directory named after the clock would differ
between processes that start in different seconds, so:

- under torchrun, global rank 0 decides (the usual time-stamped directory, or the run that
  `ckpt_path=last` finds) and publishes its choice in the key-value store that torchrun's agent
  already runs for the job; every other process reads it from there;
- under srun (without torchrun), the directory is named after the job and step (`slurm-<job>.<step>`),
  which every task knows;
- any other launcher must be given the directory: `hydra.run.dir=<dir>`, the same for all processes.

Lightning's own launcher (`trainer.devices=N` without torchrun) passes its children the parent's
directory itself and needs none of this.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

STORE_TIMEOUT = timedelta(minutes=10)  # how long the other ranks wait for rank 0's decision
_problem: str | None = None  # why the processes of this job could not agree on a run directory


def launched_rank_and_size() -> tuple[int, int]:
    """(global rank, number of processes) as torchrun or srun announce them; (0, 1) for a process on its own."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun (and launchers like it)
        return int(env["RANK"]), int(env["WORLD_SIZE"])
    tasks = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1"))
    if env.get("SLURM_STEP_ID", "").isdigit() and tasks.isdigit():  # a task of an srun step
        return int(env.get("SLURM_PROCID", 0)), int(tasks)
    return 0, 1


def is_first_process() -> bool:
    """True unless this process is one of the other ranks of a torchrun/srun job (they write no run files)."""
    return launched_rank_and_size()[0] == 0


def agreed_run_dir(runs_root: str, fresh: str, choose: Callable[[str], str]) -> str:
    """The run directory `choose(fresh)` gives on rank 0, for every process of the job (see the module docstring).

    `fresh` is the directory a new run would get. Never raises (Hydra would print a deep traceback):
    when no agreement is possible, the process keeps its own choice and `check_run_dir_agreed`
    reports why, in one line, when training starts.
    """
    global _problem
    rank, size = launched_rank_and_size()
    env = os.environ
    if size <= 1:
        return choose(fresh)
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "MASTER_ADDR" in env and "MASTER_PORT" in env:
        try:
            return _through_agent_store(rank, lambda: choose(fresh))
        except Exception as e:  # the store is unreachable, or rank 0 never published
            _problem = f"could not share the run directory through torchrun's store ({type(e).__name__}: {e})"
            return choose(fresh)
    if "SLURM_JOB_ID" in env and env.get("SLURM_STEP_ID", "").isdigit():
        return choose(str(Path(runs_root) / f"slurm-{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}"))
    _problem = f"{size} processes were started by a launcher other than torchrun or srun"
    return choose(fresh)


def _through_agent_store(rank: int, choose: Callable[[], str]) -> str:
    import torch.distributed as dist

    env = os.environ
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), is_master=False, timeout=STORE_TIMEOUT)
    # One decision per attempt: an elastic restart decides afresh (it is a new run unless told to resume).
    key = f"fragment_llm/run_dir/{env.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if rank == 0:
        chosen = choose()
        store.set(key, chosen)
        return chosen
    return store.get(key).decode()


def check_run_dir_agreed() -> None:
    """Refuse to train when the processes of this job may each have picked their own run directory."""
    from fragment_llm.errors import ConfigError

    if _problem is not None:
        raise ConfigError(
            f"Multi-process launch: {_problem}, so its processes may not share one run directory. "
            "Give it explicitly, the same for every process: hydra.run.dir=<dir> (or resume=<run dir>)."
        )


def log_to_own_file() -> None:
    """Other ranks of a torchrun/srun job log to `<job>_rank<N>.log` beside the run's own log, not into it."""
    rank, size = launched_rank_and_size()
    if size <= 1 or rank == 0:
        return
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        path = Path(handler.baseFilename)
        own = logging.FileHandler(path.with_name(f"{path.stem}_rank{rank}{path.suffix}"))
        own.setFormatter(handler.formatter)
        own.setLevel(handler.level)
        root.removeHandler(handler)
        handler.close()
        root.addHandler(own)
