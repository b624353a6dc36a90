"""What a run reports while it trains: throughput and MFU, and the config linked to the best val/loss."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback

from fragment_llm.training.metrics import flops_per_token

log = logging.getLogger(__name__)

_COMPUTE_DTYPE = {"bf16": torch.bfloat16, "16": torch.float16, "64": torch.float64}


class SpeedMonitor(Callback):
    """Logs `train/tokens_per_sec` (all processes together) and, where the GPU's peak is known, `train/mfu`.

    Measured over the optimizer steps between two logging points, validation excluded; the
    progress bar shows the same figure. `tokens_per_sec` is the whole run's average.
    """

    def __init__(self) -> None:
        self.tokens_per_sec = 0.0
        self._total_tokens, self._total_secs = 0, 0.0
        self._window_tokens, self._window_start = 0, 0.0
        self._paused_at: float | None = None
        self._flops_per_token = 0
        self._peak_flops: int | None = None
        self._last_step = -1
        self._stepped_once = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        gpt = pl_module.model
        self._flops_per_token = flops_per_token(gpt.config, gpt.num_params())
        device = trainer.strategy.root_device
        if device.type == "cuda":  # Lightning knows the peak FLOP/s of common GPUs; CPUs have no such table
            dtype = _COMPUTE_DTYPE.get(str(trainer.precision).split("-")[0], torch.float32)
            self._peak_flops = get_available_flops(device, dtype)
        self._window_start, self._last_step = self._now(trainer), trainer.global_step

    @staticmethod
    def _now(trainer: pl.Trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait for them before reading the clock
        return time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._window_tokens += batch[0].numel() * trainer.world_size  # (B, T) per process
        stepped, self._last_step = trainer.global_step != self._last_step, trainer.global_step
        if stepped and not self._stepped_once:
            self._stepped_once = True
            log.info("First training step done")  # start-up ends here (bench/startup.py times this line)
        if not stepped or trainer.global_step % max(1, trainer.log_every_n_steps) != 0:
            return  # between optimizer steps (gradient accumulation), or not a logging step
        now = self._now(trainer)
        secs = now - self._window_start
        if secs <= 0:
            return
        self._total_tokens += self._window_tokens
        self._total_secs += secs
        self.tokens_per_sec = self._total_tokens / self._total_secs
        window_rate = self._window_tokens / secs
        pl_module.log("train/tokens_per_sec", window_rate, on_step=True, on_epoch=False, prog_bar=True)
        if self._peak_flops:
            mfu = window_rate / trainer.world_size * self._flops_per_token / self._peak_flops
            pl_module.log("train/mfu", mfu, on_step=True, on_epoch=False)
        self._window_tokens, self._window_start = 0, now

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # sanity checks run before on_train_start
            self._paused_at = self._now(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if self._paused_at is not None:  # validation, samples and checkpoints since then are not training time
            self._window_start += self._now(trainer) - self._paused_at
            self._paused_at = None


class HParamsWithBestLoss(Callback):
    """TensorBoard's HPARAMS tab: this run's resolved config, linked to the metric `hp/best_val_loss`.

    The config comes from the module's `run_config` hyperparameter; the metric is the lowest
    val/loss so far (the initial, untrained one included), so sweep runs can be compared.
    """

    def __init__(self) -> None:
        self.best: float | None = None
        self._hparams_written = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or not trainer.loggers:
            return
        loss = float(loss)
        if math.isfinite(loss) and (self.best is None or loss < self.best):
            self.best = loss
        if self.best is None:
            return
        metrics = {"hp/best_val_loss": self.best}
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step val/loss was just logged at
        for logger in trainer.loggers:
            if not self._hparams_written:
                params = pl_module.hparams.get("run_config") or dict(pl_module.hparams)
                logger.log_hyperparams(params, metrics)
            logger.log_metrics(metrics, step=step)
        self._hparams_written = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
