"""What each validation scores: an untrained baseline, partial estimates while training, the whole split at the end.

- Baseline (fresh runs): Lightning's sanity check scores the first `trainer.num_sanity_val_steps` val
  batches with the untrained model; that val/loss is `initial_val_loss`, logged at step 0. It runs
  inside `trainer.fit`, after the strategy has wrapped the model (FSDP needs that order), and leaves
  the RNG as it found it.
- While training, every `trainer.val_check_interval` steps: the first `trainer.limit_val_batches`
  batches of the val split, read in one fixed random order (a uniform sample, the same every time),
  so the curve and the best checkpoint compare like with like.
- After training, when those were partial: the whole split, in a `trainer.validate` of its own. Its
  val/loss is the run's figure (summary, result.json, hp/best_val_loss when lower), logged one step
  after the last periodic one.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import FSDPStrategy

log = logging.getLogger(__name__)


def _limits_validation(limit: Any) -> bool:
    """Whether `trainer.limit_val_batches` leaves part of the split out (an int may still cover all of it)."""
    return limit != 0 and not (isinstance(limit, float) and limit >= 1.0)


class ValidationSchedule(Callback):
    """Records the baseline; `validate_whole_split` (called after fit, if `final_full_split`) scores the whole split."""

    def __init__(self, final_full_split: bool = True) -> None:
        self.final_full_split = final_full_split
        self.initial_val_loss: float | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self.initial_val_loss = float(trainer.callback_metrics["val/loss"])
        batches = sum(trainer.num_sanity_val_batches)
        log.info("Initial val/loss %.4f (untrained model, %d val batches)", self.initial_val_loss, batches)
        for logger in trainer.loggers:  # Lightning logs nothing from a sanity check; the curve starts here
            logger.log_metrics({"val/loss": self.initial_val_loss}, step=trainer.global_step)

    def validate_whole_split(self, trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any) -> None:
        """After fit: when the periodic validations scored part of the split, score all of it (the run's figure).

        A separate `trainer.validate`, so the checkpoints and loop state of the fit are left as they are
        (a validation forced into the training loop off its interval would confuse a later resume).
        """
        if not self.final_full_split or not _limits_validation(trainer.limit_val_batches):
            return
        if trainer.fast_dev_run or trainer.overfit_batches or trainer.global_step == 0:
            return
        if isinstance(trainer.strategy, FSDPStrategy):  # validate would run on the unwrapped, still sharded module
            log.warning(
                "Under FSDP the whole-split validation after training is skipped; val/loss is the last estimate"
            )
            return
        trainer.limit_val_batches = 1.0
        trainer.validate(model, datamodule=datamodule, verbose=False)
