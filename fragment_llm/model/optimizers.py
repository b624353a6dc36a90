"""The optimizer and step schedule a run trains with, built from the `optimizer` config (conf/optimizer/*.yaml).

    adamw  AdamW on every parameter; weight decay on matrices and embeddings, not on gains and biases
    muon   Muon on the hidden matrices (lr), AdamW on embeddings and gains (adam_lr) and an untied head (head_lr)

Both follow one schedule, stepped every optimizer step and applied to every group as a
factor of its own learning rate: linear warmup, then cosine decay to min_lr (`cosine`), or
flat then a linear decay to min_lr over the last `decay_fraction` (`wsd`, warmup-stable-decay,
the trapezoid). Muon's momentum warms up from `momentum_warmup_start` over the first
`momentum_warmup_steps` steps, as in modded-nanogpt.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from fragment_llm.config import OptimizerConfig
from fragment_llm.model.gpt import GPT
from fragment_llm.model.muon import MuonWithAdamW

# Devices where torch has a fused AdamW kernel (one kernel for every tensor's update instead of ~10 foreach
# ops). It gives foreach's updates up to rounding; on this project's 0.8M CPU recipe its step took 0.5 ms
# instead of 2.6 ms (bench/optimizer_step.py; 2-core AMD EPYC, torch 2.13).
FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps", "xpu")


def adamw_impl(params: list[torch.Tensor]) -> dict[str, Any]:
    """`fused=True` when every parameter is a floating-point tensor on a device with the fused kernel."""
    fused = all(p.is_floating_point() and p.device.type in FUSED_ADAMW_DEVICES for p in params)
    return {"fused": True} if fused and params else {}


def warmup_cosine(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate at optimizer step `step`: linear warmup, cosine decay to `min_lr`, then flat."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def warmup_stable_decay(
    step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int, decay_fraction: float
) -> float:
    """Linear warmup, `lr` until the last `decay_fraction` of `decay_steps`, a straight line to `min_lr`, flat."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    decay_start = max(warmup_steps, round(decay_steps * (1.0 - decay_fraction)))
    if step < decay_start:
        return lr
    return lr - (lr - min_lr) * (step - decay_start) / max(1, decay_steps - decay_start)


def momentum_warmup(step: int, start: float, end: float, steps: int) -> float:
    """Muon's momentum: linear from `start` to `end` over the first `steps` steps."""
    frac = min(1.0, step / steps) if steps > 0 else 1.0
    return start + (end - start) * frac


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that also sets the Muon groups' momentum; both are functions of the step, so resumes are exact."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_factor, momentum_at=None) -> None:
        self.momentum_at = momentum_at
        super().__init__(optimizer, lr_factor)

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        if self.momentum_at is not None:
            for group in self.optimizer.param_groups:
                if group.get("kind") == "muon":
                    group["momentum"] = self.momentum_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "momentum_at"}  # a function: not data


def build_optimizer(model: GPT, optimizer: dict[str, Any], max_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """The optimizer for `model` and its per-step schedule, from a plain `optimizer` config dict.

    The schedule ends at `optimizer["decay_steps"]`, or at `max_steps` when that is None.
    """
    o = {**dataclasses.asdict(OptimizerConfig()), **optimizer}  # keys missing from older checkpoints: defaults
    betas, wd = tuple(o["betas"]), o["weight_decay"]
    momentum_at = None
    if o["name"] == "muon":
        roles = model.params_by_role()
        adamw_groups = [
            {"params": roles["embeddings"], "lr": o["adam_lr"], "weight_decay": wd},
            {"params": roles["head"], "lr": o["head_lr"] or o["adam_lr"], "weight_decay": wd},
            {"params": roles["gains_and_biases"], "lr": o["adam_lr"], "weight_decay": 0.0},
        ]
        opt: torch.optim.Optimizer = MuonWithAdamW(
            [{"params": roles["hidden_matrices"]}],
            [g for g in adamw_groups if g["params"]],
            lr=o["lr"],
            momentum=o["momentum"],
            ns_steps=o["ns_steps"],
            ns_precondition=o["ns_precondition"],
            neuron_norm=o["neuron_norm"],
            weight_decay=wd,
            adamw=dict(betas=betas, **adamw_impl(list(model.parameters()))),
        )
        start, end, steps = o["momentum_warmup_start"], o["momentum"], o["momentum_warmup_steps"]

        def momentum_at(step: int) -> float:
            return momentum_warmup(step, start, end, steps)

    else:
        impl = adamw_impl(list(model.parameters()))
        opt = torch.optim.AdamW(model.optimizer_param_groups(wd), lr=o["lr"], betas=betas, **impl)
    lr, min_lr, warmup = o["lr"], o["min_lr"], o["warmup_steps"]
    decay_steps, fraction = o["decay_steps"] or max_steps, o["decay_fraction"]

    def lr_factor(step: int) -> float:  # a plain function, so LambdaLR stores no state for it
        if o["schedule"] == "wsd":
            return warmup_stable_decay(step, 1.0, min_lr / lr, warmup, decay_steps, fraction)
        return warmup_cosine(step, lr, min_lr, warmup, decay_steps) / lr

    return opt, StepSchedule(opt, lr_factor, momentum_at)
