"""The training job: config in, trained checkpoint out. `train.py` is a thin Hydra wrapper around `train`."""

from __future__ import annotations

import contextlib
import logging
import shlex
import warnings
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from fragment_llm.data.datamodule import TextDataModule
from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.model.checkpoint_shapes import check_weights_match_config, claimed_config, model_state
from fragment_llm.model.gpt import GPTConfig
from fragment_llm.precision import resolve_training_precision
from fragment_llm.training.checkpoint_io import (
    FlushLogsOnCheckpoint,
    SafeCheckpointIO,
    atomic_write,
    load_checkpoint_safely,
)
from fragment_llm.training.config_checks import validate_train_config
from fragment_llm.training.console import quiet_lightning
from fragment_llm.training.init_from import apply_init_from, load_pretrained_weights, model_vocab_size
from fragment_llm.training.lit_module import LitGPT
from fragment_llm.training.monitoring import SpeedMonitor
from fragment_llm.training.resume import RESUME_KEYS, config_changes, plain
from fragment_llm.training.resume_state import check_loop_state, check_resume_state
from fragment_llm.training.rng import CarryRNGState
from fragment_llm.training.run_lock import run_lock
from fragment_llm.training.run_record import RecordInCheckpoints, collect_run_record, write_run_record
from fragment_llm.training.rundir import (
    CHECKPOINTS,
    LAST,
    check_stored_checkpoint_paths,
    refuse_existing_run,
    refuse_links_in_run_dir,
    remove_partial_checkpoints,
    resume_checkpoint,
)
from fragment_llm.training.strategies import check_resume_loader
from fragment_llm.training.targets import check_targets
from fragment_llm.training.validation import ValidationSchedule

log = logging.getLogger(__name__)
quiet_lightning()  # no Lightning tips or messages a user cannot act on

# Windows are sliced from a memmap in microseconds; worker processes would only add start-up time.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Lightning 2.6 with torch >= 2.10 warns about its own use of a torch internal; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
# Only a resumed run finds its checkpoint directory in use (a fresh run refuses such a directory).
warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
# Our train sampler resumes from Lightning's restored batch counter (data/train_window_order.py), mid-epoch included.
warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")


def train(cfg: DictConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train a model as `cfg` describes; return the run directory, checkpoint paths and val losses.

    `overrides` (the command-line overrides behind `cfg`) are stored in the checkpoints, so
    `train.py` can resume the run with its own settings. The process that owns the run (rank 0)
    locks its directory: a second process on the same run is refused (training/run_lock.py).
    """
    pretrained = apply_init_from(cfg, list(overrides or []))  # sets the model and tokenizer from the directory
    validate_train_config(cfg)
    check_targets(cfg)  # before anything is instantiated (or a run directory made), however the config was built
    owner = rank_zero_only.rank == 0  # the other ranks of a multi-process job share its directory
    with run_lock(Path(cfg.paths.output_dir).resolve()) if owner else contextlib.nullcontext():
        return _train(cfg, overrides, pretrained)


def _train(cfg: DictConfig, overrides: list[str] | None, pretrained: Any) -> dict[str, Any]:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.paths.output_dir).resolve()
    runs_root = Path(cfg.paths.log_dir).resolve() / cfg.task_name
    resume_from = resume_checkpoint(cfg.resume, cfg.ckpt_path, run_dir, runs_root)
    checkpoint = _vetted_checkpoint(resume_from, run_dir) if resume_from else None
    is_main = rank_zero_only.rank == 0  # multi-process runs start this function in every process
    if is_main:
        _prepare_run_dir(run_dir, resuming=resume_from is not None)

    trainer = _build_trainer(cfg, resume_step=checkpoint["global_step"] if checkpoint else None)
    if checkpoint is not None:
        check_resume_loader(trainer.strategy)  # Lightning reads the checkpoint again through the strategy
        check_loop_state(checkpoint, trainer.fit_loop.state_dict(), resume_from)  # the keys this Lightning indexes
    datamodule = TextDataModule(
        data=OmegaConf.to_container(cfg.data, resolve=True),
        tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
        block_size=cfg.model.block_size,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    tokenizer = datamodule.tokenizer
    log.info(
        "Data: %s train / %s val tokens, vocabulary %d (%s)",
        f"{datamodule.cache.meta['tokens']['train']:,}",
        f"{datamodule.cache.meta['tokens']['val']:,}",
        tokenizer.vocab_size,
        tokenizer.kind,
    )
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    compile_model = model_cfg.pop("compile")
    model_cfg["vocab_size"] = model_vocab_size(pretrained, tokenizer)
    run_config = {k: v for k, v in plain(cfg).items() if k not in RESUME_KEYS}
    if checkpoint is not None:  # before the model is built: a resumed run keeps the checkpoint's (vetted) shape
        _check_resumable(checkpoint, model_cfg, tokenizer.to_json(), run_config, resume_from)
    model = LitGPT(
        model=model_cfg,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        tokenizer_json=tokenizer.to_json(),
        compile=compile_model,
        run_config=run_config,
        overrides=list(overrides or []),
    )
    log.info("Model: %.2fM parameters", model.model.num_params() / 1e6)
    if checkpoint is None and pretrained is not None:
        load_pretrained_weights(model.model, pretrained)
    if is_main:
        text = OmegaConf.to_yaml(cfg, resolve=True)
        atomic_write(run_dir / "config.yaml", lambda f: f.write(text.encode()))
        tokenizer.save(run_dir / "tokenizer.json")
        record = collect_run_record(run_dir, datamodule.cache, trainer)  # what produced this run: the audit trail
        write_run_record(run_dir, record)
        trainer.callbacks.append(RecordInCheckpoints(record))

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)  # with the untrained baseline (validation.py)
    schedule = next((c for c in trainer.callbacks if isinstance(c, ValidationSchedule)), None)
    if schedule is not None:
        schedule.validate_whole_split(trainer, model, datamodule)
    return _finish(trainer, run_dir, schedule.initial_val_loss if schedule else None, resume_from)


def _vetted_checkpoint(path: Path, run_dir: Path) -> dict[str, Any]:
    """The checkpoint a run resumes from, read as data and checked before anything is built from it."""
    checkpoint = load_checkpoint_safely(path, mmap=True)  # weights_only; memory-mapped: tensors stay on disk
    check_resume_state(checkpoint, path)  # counters, seeds, generator states: plain data of the right shape
    check_weights_match_config(claimed_config(checkpoint, path), model_state(checkpoint), path)
    refuse_links_in_run_dir(run_dir)
    check_stored_checkpoint_paths(checkpoint, run_dir / CHECKPOINTS, path)
    return checkpoint


def _prepare_run_dir(run_dir: Path, resuming: bool) -> None:
    if not resuming:
        refuse_existing_run(run_dir)
    for stale in remove_partial_checkpoints(run_dir):
        log.info("Removed %s, left by a save that was interrupted", stale.name)
    run_dir.mkdir(parents=True, exist_ok=True)


def _build_trainer(cfg: DictConfig, resume_step: int | None) -> pl.Trainer:
    precision, why = resolve_training_precision(cfg.trainer.precision, cfg.trainer.accelerator, cfg.model.n_embd)
    log.info("Precision: %s (%s)", precision, why)
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    if cfg.trainer.enable_model_summary:  # the plain table goes to the log; Lightning's default prints to stdout
        callbacks.append(ModelSummary())
    if not cfg.trainer.enable_progress_bar:  # Lightning refuses a progress bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks += [CarryRNGState(), FlushLogsOnCheckpoint()]  # exact, complete resumes depend on them
    logger: Any = False
    if cfg.logger is not None:
        extra = {}
        if resume_step is not None and cfg.logger._target_.endswith("TensorBoardLogger"):
            # TensorBoard hides what the interrupted run logged after its checkpoint; the resumed run relogs it.
            extra["purge_step"] = resume_step
        logger = instantiate(cfg.logger, **extra)
    no_baseline = {"num_sanity_val_steps": 0} if resume_step is not None else {}  # the baseline is for fresh runs
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        precision=precision,
        callbacks=callbacks,
        logger=logger,
        plugins=[SafeCheckpointIO()],
        **no_baseline,
    )
    _refuse_multiprocess_sweep(trainer)
    if cfg.tokens_per_step is not None:
        trainer.accumulate_grad_batches = accumulate_batches(  # a plain Trainer attribute
            cfg.tokens_per_step, cfg.data.batch_size, cfg.model.block_size, trainer.world_size
        )
    if isinstance(trainer.val_check_interval, int):  # we count optimizer steps; Lightning counts batches
        trainer.val_check_interval *= trainer.accumulate_grad_batches
    if trainer.strategy.root_device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls where fp32 remains (as nanoGPT)
    return trainer


def _refuse_multiprocess_sweep(trainer: pl.Trainer) -> None:
    """`-m` with a subprocess-launched DDP: each child re-runs the command line, and so the whole sweep."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if isinstance(getattr(trainer.strategy, "launcher", None), _SubprocessScriptLauncher):
        raise ConfigError(
            f"trainer.devices={trainer.num_devices}, trainer.num_nodes={trainer.num_nodes} in a sweep (-m): Lightning "
            "starts the extra processes by re-running the command line, so every one of them would run the whole "
            "sweep again. Give each sweep job one device (trainer.devices=1), or start multi-device runs one by one."
        )


def accumulate_batches(tokens_per_step: int, batch_size: int, block_size: int, world_size: int) -> int:
    """Batches to accumulate per optimizer step so that a step sees about `tokens_per_step` tokens."""
    per_batch = batch_size * block_size * world_size
    accumulate = max(1, round(tokens_per_step / per_batch))
    how = f"{accumulate} batches x {batch_size} x {block_size} tokens x {world_size} processes"
    if accumulate * per_batch != tokens_per_step:
        log.warning(
            "tokens_per_step=%d is not a multiple of %d tokens per batch: using %s = %d tokens per step",
            tokens_per_step,
            per_batch,
            how,
            accumulate * per_batch,
        )
    else:
        log.info("tokens_per_step=%d: %s", tokens_per_step, how)
    return accumulate


def _check_resumable(
    checkpoint: dict[str, Any], model_cfg: dict[str, Any], tokenizer_json: str, run_config: dict[str, Any], path: Path
) -> None:
    """Refuse a resume that would load weights into a different model or read data with another tokenizer."""
    hparams = checkpoint.get("hyper_parameters") or {}
    # A checkpoint from before a switch existed was built with that switch's default (GPT-2's layout).
    defaults = {f.name: f.default for f in fields(GPTConfig) if f.default is not MISSING}
    changed = config_changes({**defaults, **(hparams.get("model") or {})}, {**defaults, **model_cfg})
    if changed:
        raise CheckpointError(
            f"{path}: this config builds a different model ({'; '.join(changed)}). A resumed run keeps its shape; "
            "drop those overrides (the run's own settings are applied when resuming)."
        )
    if checkpoint.get("tokenizer") != tokenizer_json:
        raise CheckpointError(
            f"{path}: the data or tokenizer settings give a different tokenizer than the run was trained with. "
            "Resume with the run's data.* and tokenizer.* values, or start a new run."
        )
    changes = config_changes(hparams.get("run_config") or {}, run_config)
    log.info(
        "Resuming from %s (step %d)%s",
        path,
        checkpoint["global_step"],
        "; changed: " + "; ".join(changes) if changes else " with the run's settings",
    )


def _finish(trainer: pl.Trainer, run_dir: Path, initial_val_loss: float | None, resumed: Path | None) -> dict:
    checkpoint_cb = trainer.checkpoint_callback
    last = Path(checkpoint_cb.last_model_path) if checkpoint_cb and checkpoint_cb.last_model_path else None
    last = last or run_dir / CHECKPOINTS / LAST
    saved_step = getattr(checkpoint_cb, "_last_global_step_saved", None)  # the step of the newest save
    # Saving is collective (FSDP gathers the shards): rank 0, which writes the file, decides for all.
    if trainer.strategy.broadcast(saved_step != trainer.global_step or not last.exists(), src=0):
        trainer.save_checkpoint(last, weights_only=False)  # the full state: steps since the last validation too
    speed = next((c for c in trainer.callbacks if isinstance(c, SpeedMonitor)), None)
    result = {
        "run_dir": str(run_dir),
        "last_ckpt": str(last),
        "best_ckpt": checkpoint_cb.best_model_path if checkpoint_cb else None,
        "resumed_from": str(resumed) if resumed else None,
        "initial_val_loss": initial_val_loss,
        "val_loss": _as_float(trainer.callback_metrics.get("val/loss")),
        "val_bpb": _as_float(trainer.callback_metrics.get("val/bpb")),  # bits per byte: comparable across tokenizers
        "best_val_loss": _as_float(checkpoint_cb.best_model_score if checkpoint_cb else None),
        "global_step": trainer.global_step,
        "tokens_per_sec": speed.tokens_per_sec if speed else None,
    }
    if trainer.is_global_zero:
        _print_summary(result)
    return result


def _as_float(value: Any) -> float | None:
    return float(value) if value is not None else None


def _print_summary(result: dict[str, Any]) -> None:
    if result["initial_val_loss"] is not None and result["val_loss"] is not None:
        log.info(
            "val/loss %.4f -> %.4f after %d steps",
            result["initial_val_loss"],
            result["val_loss"],
            result["global_step"],
        )
    if result["tokens_per_sec"]:
        log.info("Training throughput: %s tokens/s", f"{result['tokens_per_sec']:,.0f}")
    print(f"\nRun directory: {result['run_dir']}")
    print(f"Sample from it: python generate.py {command_arg('ckpt', result['last_ckpt'])}")
    print(f"Continue it:    python train.py {command_arg('resume', result['run_dir'])}")


def command_arg(key: str, value: str) -> str:
    """`key=value` as a shell word Hydra reads back as `value` (sweep job paths contain `=` and `,`)."""
    try:
        if OverridesParser.create().parse_override(f"{key}={value}").value() == value:
            return shlex.quote(f"{key}={value}")
    except Exception:  # Hydra's grammar rejects the bare value: quote it for Hydra, then for the shell
        pass
    return shlex.quote(f'{key}="{value}"')
