"""`trainer.precision=auto`: the fastest numerics the hardware does well, chosen at start and logged."""

from __future__ import annotations

import torch


def resolve_precision(precision: str, accelerator: str) -> tuple[str, str]:
    """Return (Lightning precision, reason). Anything but "auto" is passed through unchanged.

    auto: bf16-mixed on CUDA GPUs with bf16 units (Ampere and newer), 16-mixed on older GPUs
    (with loss scaling), 32-true elsewhere: CPUs here have no fast bf16 matmul, and fp32 keeps
    runs on different machines comparable.
    """
    if precision != "auto":
        return precision, "as configured"
    on_cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if not on_cuda:
        return "32-true", f"accelerator={accelerator} without a CUDA GPU"
    name = torch.cuda.get_device_name(0)
    if torch.cuda.is_bf16_supported():
        return "bf16-mixed", f"{name} supports bf16"
    return "16-mixed", f"{name} has no bf16 units"
