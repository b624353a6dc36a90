"""`precision=auto`: the numerics that run fastest on this machine for this model, chosen at start and logged.

Shared by training (`trainer.precision`, Lightning's names) and generation (`precision`, dtypes).
The rule follows measurements (BENCHMARKS.md, "bf16 or fp32"):

- CUDA: bf16 where the GPU has bf16 units (compute capability 8.0, Ampere, and newer), fp16
  otherwise (with loss scaling in training). `torch.cuda.is_bf16_supported()` is not the test: it
  is also true where bf16 is only emulated (V100, T4), which is slower than fp16.
- CPU: bf16 only with AMX (Intel Xeon Sapphire Rapids and newer) and a model at least
  BF16_CPU_MIN_EMBD wide. Measured training speed, bf16-mixed vs fp32: with AMX-bf16 (a 2-core
  Xeon), n_embd 384 (10.6M parameters) 1.43x, n_embd 128 (0.8M) 0.82x; without AMX (AVX2 only,
  a 2-core AMD EPYC) bf16 was an order of magnitude slower for both shapes (0.06x, 0.05x). Two points
  bracket the threshold; nothing between them was measured.
- Elsewhere (MPS, other accelerators): fp32 for training, fp16 for generation on MPS.
"""

from __future__ import annotations

from functools import cache

import torch

BF16_CPU_MIN_EMBD = 256  # between the two shapes measured with AMX: 128 (bf16 slower) and 384 (bf16 faster)


@cache
def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (every such CPU so far has AMX-BF16). Unknown counts as no."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch's own query (private, torch >= 2.1)
    try:
        return bool(probe is not None and probe())
    except Exception:
        return False


def cuda_has_bf16_units(device: int | torch.device | None = None) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 0)


def cpu_bf16_is_faster(n_embd: int | None) -> tuple[bool, str]:
    """(whether bf16 beats fp32 on this CPU for a model n_embd wide, the reason in words)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if not cpu_has_amx():
        return False, f"CPU without AMX ({capability}): bf16 matmuls are slower than fp32 there"
    if n_embd is None or n_embd < BF16_CPU_MIN_EMBD:
        return False, f"CPU with AMX, but model.n_embd={n_embd} < {BF16_CPU_MIN_EMBD}: too small for bf16 to pay"
    return True, f"CPU with AMX and model.n_embd={n_embd} >= {BF16_CPU_MIN_EMBD}"


def _cuda_reason(device: int | torch.device | None) -> tuple[bool, str]:
    name, (major, minor) = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
    if cuda_has_bf16_units(device):
        return True, f"{name}, compute capability {major}.{minor}, has bf16 units"
    return False, f"{name}, compute capability {major}.{minor}, has no bf16 units"


def resolve_training_precision(precision: str, accelerator: str, n_embd: int) -> tuple[str, str]:
    """(Lightning precision, reason). Anything but "auto" is passed through unchanged."""
    if precision != "auto":
        return precision, "as configured"
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        bf16, why = _cuda_reason(0)
        return ("bf16-mixed", why) if bf16 else ("16-mixed", why + "; fp16 with loss scaling")
    if accelerator in ("auto", "cpu"):
        bf16, why = cpu_bf16_is_faster(n_embd)
        return ("bf16-mixed" if bf16 else "32-true"), why
    return "32-true", f"accelerator={accelerator}"


def generation_dtype(device: torch.device, n_embd: int | None) -> tuple[torch.dtype, str]:
    """(dtype, reason) for `precision=auto` in generation on `device`."""
    if device.type == "cuda":
        bf16, why = _cuda_reason(device)
        return (torch.bfloat16 if bf16 else torch.float16), why
    if device.type == "mps":
        return torch.float16, "Apple GPU"
    bf16, why = cpu_bf16_is_faster(n_embd)
    return (torch.bfloat16 if bf16 else torch.float32), why
