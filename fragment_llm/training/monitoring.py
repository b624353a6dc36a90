"""What a run reports while it trains: throughput and MFU, and the config linked to the best val/loss."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from fragment_llm.training.metrics import flops_per_token
from fragment_llm.training.peak_flops import compute_dtype, gpu_label, peak_flops

log = logging.getLogger(__name__)


class SpeedMonitor(Callback):
    """Logs `train/tokens_per_sec` (all processes together), `train/mfu` where the GPU's dense peak is known
    (peak_flops.py), and on GPUs `train/max_memory_gb` (the most this process's tensors held so far).

    Measured over the optimizer steps between two logging points, validation excluded; the
    progress bar shows the same figure. `tokens_per_sec` is the whole run's average. MFU is per
    GPU: all processes' tokens/s over the processes, against one GPU's peak.
    """

    def __init__(self) -> None:
        self.tokens_per_sec = 0.0
        self._total_tokens, self._total_secs = 0, 0.0
        self._window_tokens, self._window_start = 0, 0.0
        self._paused_at: float | None = None
        self._flops_per_token = 0
        self._peak_flops: float | None = None
        self._last_step = -1
        self._stepped_once = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before the strategy wraps the model: under FSDP each process then holds a shard of every parameter.
        self._flops_per_token = flops_per_token(pl_module.model)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        if device.type == "cuda":  # CPUs have no such table
            name, tf32 = torch.cuda.get_device_name(device), torch.get_float32_matmul_precision() != "highest"
            self._peak_flops = peak_flops(name, str(trainer.precision), tf32)
            dtype = compute_dtype(str(trainer.precision), tf32)
            if trainer.is_global_zero and self._peak_flops:
                log.info(
                    "MFU against the %s's dense %s peak: %.0f TFLOP/s", gpu_label(name), dtype, self._peak_flops / 1e12
                )
            elif trainer.is_global_zero:
                log.info("No train/mfu: no dense %s peak known for %s (training/peak_flops.py)", dtype, name)
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
        if trainer.strategy.root_device.type == "cuda":  # the allocator's own count: no device sync
            peak_bytes = torch.cuda.max_memory_allocated(trainer.strategy.root_device)
            pl_module.log("train/max_memory_gb", peak_bytes / 1e9, on_step=True, on_epoch=False)
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
