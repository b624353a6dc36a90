"""A progress bar over optimizer steps (not epochs), showing loss and tokens/s, on stderr."""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

# Logged name -> what the bar shows (the bar is narrow; TensorBoard keeps the full names).
_SHORT_NAMES = {"train/loss": "loss", "val/loss": "val_loss", "train/tokens_per_sec": "tok/s"}


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, but one bar for the whole run: step i of max_steps.

    Training "epochs" here are only a sampling horizon, so a per-epoch bar would mislead.
    Tokens/s comes from the SpeedMonitor callback's logged `train/tokens_per_sec`. The loss and
    tokens/s shown change on logging steps (trainer.log_every_n_steps): between them the bar
    only counts steps, so drawing it never waits for the device.
    """

    # Lightning's bars write to stdout, which carries only results here: they are made while stdout is stderr.
    def init_sanity_tqdm(self) -> Tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Tqdm:
        with redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.train_progress_bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_description("Training")

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # keep the single run-long bar

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        step = trainer.global_step
        if step % max(1, trainer.log_every_n_steps) == 0 or step == bar.total:
            # New values were logged: reading them waits for the device, so only on logging steps.
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)
        elif step > bar.n:
            bar.update(step - bar.n)  # tqdm redraws at most every `mininterval` seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.train_progress_bar is not None and not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        shown = {_SHORT_NAMES.get(k, k): v for k, v in metrics.items()}
        if isinstance(shown.get("tok/s"), float):
            shown["tok/s"] = f"{shown['tok/s']:,.0f}"
        return shown
