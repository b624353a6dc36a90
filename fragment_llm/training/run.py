"""The training job: config in, trained checkpoint out. `train.py` is a thin Hydra wrapper around `train`."""

from __future__ import annotations

import logging
import shlex
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fragment_llm.config import validate_train_config
from fragment_llm.data.datamodule import TextDataModule
from fragment_llm.model.lit_module import LitGPT
from fragment_llm.training.progress import StepProgressBar

log = logging.getLogger(__name__)

# Windows are sliced from a memmap in microseconds; worker processes would only add start-up time.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Lightning 2.6 with torch >= 2.10 warns about its own use of a torch internal; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a model as `cfg` describes; return the run directory, checkpoint paths and val losses."""
    validate_train_config(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.paths.output_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    datamodule = TextDataModule(
        data=OmegaConf.to_container(cfg.data, resolve=True),
        tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
        block_size=cfg.model.block_size,
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    tokenizer = datamodule.tokenizer
    tokenizer.save(run_dir / "tokenizer.json")
    log.info(
        "Data: %s train / %s val tokens, vocabulary %d (%s)",
        f"{datamodule.cache.meta['tokens']['train']:,}",
        f"{datamodule.cache.meta['tokens']['val']:,}",
        tokenizer.vocab_size,
        tokenizer.kind,
    )

    model = LitGPT(
        model={**OmegaConf.to_container(cfg.model, resolve=True), "vocab_size": tokenizer.vocab_size},
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        tokenizer_json=tokenizer.to_json(),
    )
    log.info("Model: %.2fM parameters", model.model.num_params() / 1e6)

    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    logger = instantiate(cfg.logger) if cfg.logger is not None else False
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)

    initial_val_loss = None
    if cfg.ckpt_path is None and trainer.limit_val_batches != 0:
        # The untrained model's loss is the baseline the user (and the tests) compare against.
        initial_val_loss = trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/loss"]
        log.info("Initial val/loss %.4f", initial_val_loss)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)

    checkpoint_cb = trainer.checkpoint_callback
    last = Path(checkpoint_cb.last_model_path) if checkpoint_cb and checkpoint_cb.last_model_path else None
    if last is None or not last.exists():  # e.g. no checkpoint callback configured: still keep the result
        last = run_dir / "checkpoints" / "last.ckpt"
        trainer.save_checkpoint(last)
    val_loss = trainer.callback_metrics.get("val/loss")
    bars = [c for c in trainer.callbacks if isinstance(c, StepProgressBar)]
    result = {
        "run_dir": str(run_dir),
        "last_ckpt": str(last),
        "best_ckpt": checkpoint_cb.best_model_path if checkpoint_cb else None,
        "initial_val_loss": initial_val_loss,
        "val_loss": _as_float(val_loss),
        "best_val_loss": _as_float(checkpoint_cb.best_model_score if checkpoint_cb else None),
        "global_step": trainer.global_step,
        "tokens_per_sec": bars[0].tokens_per_sec if bars else None,
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
    print(f"Sample from it: python generate.py ckpt={shlex.quote(result['last_ckpt'])}")
