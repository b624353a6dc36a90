"""LightningModule around the pure GPT: loss logging, AdamW and the LR schedule.

Hyperparameters are saved as plain dicts and the tokenizer as its JSON text, so a
checkpoint describes itself and loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

from fragment_llm.model.gpt import GPT, GPTConfig


def warmup_cosine(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at optimizer step `step`: linear warmup, cosine decay to `min_lr`, then flat."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


class LitGPT(pl.LightningModule):
    def __init__(self, model: dict[str, Any], optimizer: dict[str, Any], tokenizer_json: str | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer_json"])
        self.model = GPT(GPTConfig(**model))
        self.optimizer_cfg = dict(optimizer)
        self.tokenizer_json = tokenizer_json

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        _, loss = self.model(x, y)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        _, loss = self.model(x, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        o = self.optimizer_cfg
        groups = self.model.optimizer_param_groups(o["weight_decay"])
        optimizer = torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]))
        decay_steps = o.get("decay_steps") or self.trainer.max_steps
        lr, min_lr, warmup = o["lr"], o["min_lr"], o["warmup_steps"]

        def lr_factor(step: int) -> float:  # a plain function, so LambdaLR stores no state for it
            return warmup_cosine(step, lr, min_lr, warmup, decay_steps) / lr

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokenizer"] = self.tokenizer_json  # the checkpoint carries its own tokenizer

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokenizer_json = checkpoint.get("tokenizer", self.tokenizer_json)
