"""LightningModule around the pure GPT: losses and metrics, AdamW and the LR schedule, optional torch.compile.

Hyperparameters are saved as plain dicts and the tokenizer as its JSON text, so a
checkpoint describes itself and loads with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch

from fragment_llm.errors import TrainingError
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.training.metrics import token_byte_lengths

log = logging.getLogger(__name__)


def warmup_cosine(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at optimizer step `step`: linear warmup, cosine decay to `min_lr`, then flat."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


class LitGPT(pl.LightningModule):
    """Logs train/loss, train/lr, train/grad_norm and, per validation, val/loss, val/ppl and val/bpb.

    `run_config` (the resolved training config) and `overrides` (the command-line overrides
    that produced it) ride along in the checkpoint's hyperparameters, so a run can be resumed
    with its own settings and compared with others in TensorBoard's HPARAMS tab.
    """

    def __init__(
        self,
        model: dict[str, Any],
        optimizer: dict[str, Any],
        tokenizer_json: str | None = None,
        compile: bool = False,
        run_config: dict[str, Any] | None = None,
        overrides: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["tokenizer_json", "compile"])
        self.model = GPT(GPTConfig(**model))
        self.optimizer_cfg = dict(optimizer)
        self.tokenizer_json = tokenizer_json
        # Bytes per token id, for bits per byte; not a parameter, not saved (it comes from the tokenizer).
        # A plain attribute, not a buffer: DDP would broadcast a buffer on every forward.
        self._token_bytes = token_byte_lengths(tokenizer_json) if tokenizer_json else torch.zeros(0, dtype=torch.long)
        self.compile_requested = compile
        self._train_forward = self.model.forward  # replaced by the compiled forward in on_fit_start
        self._compile_checked = True
        self._val_sums: torch.Tensor | None = None
        self._val_tokens = 0
        self._unchecked_loss: torch.Tensor | None = None  # summed train losses since the last finiteness check
        self._checked_through = 0

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def on_fit_start(self) -> None:
        if self.compile_requested and self._train_forward == self.model.forward:
            self._train_forward = torch.compile(self.model.forward)
            self._compile_checked = False  # compilation happens, or fails, at the first call

    def _forward_train(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self._compile_checked:
            return self._train_forward(x, y)[1]
        try:
            loss = self._train_forward(x, y)[1]
        except Exception as e:  # no C compiler, no Triton, an unsupported platform: train on, uncompiled
            log.warning(
                "model.compile=true: torch.compile failed (%s: %s); training continues without compilation.",
                type(e).__name__,
                str(e).strip().splitlines()[0] if str(e).strip() else "",
            )
            self._train_forward = self.model.forward
            loss = self._train_forward(x, y)[1]
        self._compile_checked = True
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch  # (B, T), (B, T)
        loss = self._forward_train(x, y)
        # A NaN or inf anywhere makes this sum non-finite: one small device op per step, read only at checks.
        self._unchecked_loss.add_(loss.detach())
        if self._logging_step():  # reading values from the device costs a sync: only where they are logged
            self._stop_if_non_finite(self.global_step + 1)  # before this step's backward touches the weights
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def _logging_step(self) -> bool:
        """Whether Lightning writes this step's metrics: extra ones cost time only where they are kept."""
        return (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0

    def on_train_start(self) -> None:
        self._unchecked_loss = torch.zeros((), device=self.device)
        self._checked_through = self.global_step  # steps up to here are known to have had a finite loss

    def _stop_if_non_finite(self, step: int) -> None:
        """Raise if a loss since the last check was NaN or inf; `step` is the newest step that loss covers.

        Checked on logging steps, before each validation and before each checkpoint, so a checkpoint
        never holds weights a non-finite loss has touched. Under DDP all processes agree.
        """
        if self._unchecked_loss is None:  # not training
            return
        total = self.trainer.strategy.reduce(self._unchecked_loss, reduce_op="sum")
        if torch.isfinite(total):
            self._unchecked_loss.zero_()
            self._checked_through = step
            return
        first = min(self._checked_through + 1, step)
        where = f"at step {step}" if first == step else f"at a step between {first} and {step}"
        ckpt = self.trainer.checkpoint_callback
        kept = f"The last good checkpoint is {ckpt.last_model_path}. " if ckpt and ckpt.last_model_path else ""
        raise TrainingError(
            f"train/loss is {total.item()} {where}; training stopped. {kept}"
            "Lower optimizer.lr, lengthen optimizer.warmup_steps or keep trainer.gradient_clip_val, "
            "then continue with ckpt_path=last and the changed values."
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Before clipping (Lightning clips after this hook), and unscaled under 16-bit mixed precision.
        if not self._logging_step():
            return
        norms = [p.grad.detach().norm(2) for p in self.parameters() if p.grad is not None]
        if norms:
            self.log("train/grad_norm", torch.linalg.vector_norm(torch.stack(norms)), on_step=True, on_epoch=False)

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._stop_if_non_finite(self.global_step)  # a checkpoint may follow this validation
        # [summed loss in nats, summed loss over text tokens, their bytes]; MPS has no float64
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self._val_sums = torch.zeros(3, dtype=dtype, device=self.device)
        self._val_tokens = 0
        if self._token_bytes.device != self.device:
            self._token_bytes = self._token_bytes.to(self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        _, nll = self.model(x, y, reduction="none")  # (B*T,) nats per target token: the only cross-entropy
        targets = y.flatten()
        if self._token_bytes.numel():
            nbytes = self._token_bytes[targets]
            text_nll = nll * (nbytes > 0)  # special tokens have no bytes: left out of bits per byte
            sums = torch.stack([nll.sum(), text_nll.sum(), nbytes.sum().to(nll)])
        else:
            sums = torch.stack([nll.sum(), nll.new_zeros(()), nll.new_zeros(())])
        self._val_sums += sums  # stays on the device: no sync per batch
        self._val_tokens += targets.numel()

    def on_validation_epoch_end(self) -> None:
        sums = torch.cat([self._val_sums, self._val_sums.new_tensor([self._val_tokens])])
        sums = self.trainer.strategy.reduce(sums, reduce_op="sum")  # over all processes
        loss = sums[0] / sums[3]
        self.log("val/loss", loss.float(), prog_bar=True)
        self.log("val/ppl", loss.exp().float())
        if sums[2] > 0:
            self.log("val/bpb", (sums[1] / (math.log(2) * sums[2])).float())

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
        if self._unchecked_loss is not None:  # a checkpoint of a training run: never of non-finite weights
            self._stop_if_non_finite(self.global_step)
        checkpoint["tokenizer"] = self.tokenizer_json  # the checkpoint carries its own tokenizer

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokenizer_json = checkpoint.get("tokenizer", self.tokenizer_json)
