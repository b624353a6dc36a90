"""Train a GPT on your text: `python train.py [group=choice] [key=value ...]` (see README.md)."""

import logging
import math
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from fragment_llm.config import register_configs
from fragment_llm.errors import ConfigError, FragmentLLMError
from fragment_llm.training.launch import check_run_dir_agreed, log_to_own_file
from fragment_llm.training.resume import recompose_for_resume
from fragment_llm.training.run import train
from fragment_llm.training.rundir import register_run_dir_resolvers
from fragment_llm.training.sweep import RESULT_FILE, write_job_result

register_configs()
register_run_dir_resolvers()  # hydra.run.dir, .hydra/ and sweep job names (conf/hydra/default.yaml)
log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    record = {"job": hydra_cfg.job.get("num", 0), "overrides": overrides, "run_dir": hydra_cfg.runtime.output_dir}
    log_to_own_file()  # the other ranks of a torchrun/srun job: train_rank<N>.log
    try:
        check_run_dir_agreed()
        if sweeping and (cfg.resume is not None or cfg.ckpt_path is not None):
            raise ConfigError("resume/ckpt_path continue one run; they cannot be combined with a sweep (-m).")
        cfg, overrides = recompose_for_resume(cfg, overrides)  # a resumed run gets its own overrides back
        record["overrides"] = overrides
        result = train(cfg, overrides)
    except FragmentLLMError as e:
        if not sweeping:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        log.error("Sweep job %s failed: %s", record["job"], e)
        if not (Path(record["run_dir"]) / RESULT_FILE).exists():  # never over another run's record
            write_job_result(Path(record["run_dir"]), {**record, "status": f"failed: {e}"})
        return math.nan  # the sweep goes on; the summary lists this job as failed
    best = result["best_val_loss"]
    if rank_zero_only.rank == 0:  # one writer per run file, however many processes train
        write_job_result(
            Path(result["run_dir"]),
            {
                **record,
                **{k: result[k] for k in ("best_val_loss", "val_loss", "val_bpb", "tokens_per_sec")},
                "steps": result["global_step"],
                "status": "ok",
                "run_dir": result["run_dir"],
            },
        )
    return best if best is not None else math.nan  # the metric a sweeper (e.g. Optuna) minimizes


if __name__ == "__main__":
    main()
