"""A progress bar over optimizer steps (not epochs), showing loss and tokens/s."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, but one bar for the whole run: step i of max_steps.

    Training "epochs" here are only a sampling horizon, so a per-epoch bar would mislead.
    """

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._tokens = 0
        self._train_secs = 0.0  # wall time between training batches, validation pauses excluded
        self._last: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_progress_bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("Training")
        self._last = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # keep the single run-long bar

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self._tokens += batch[0].numel() * trainer.world_size
            self._train_secs += now - self._last
        self._last = now
        bar = self.train_progress_bar
        if bar is not None and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._last = time.perf_counter() if self._last is not None else None  # do not count validation time

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics["tok/s"] = f"{self.tokens_per_sec:,.0f}"
        return metrics

    @property
    def tokens_per_sec(self) -> float:
        """Training tokens per second of training time, summed over all processes."""
        return self._tokens / self._train_secs if self._train_secs > 0 else 0.0
