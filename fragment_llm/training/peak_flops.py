"""Dense peak FLOP/s of common NVIDIA GPUs, the denominator of MFU.

From NVIDIA's datasheets (and the Ampere/Ada whitepapers for GeForce cards). Where a sheet gives
only the figure "with sparsity", the dense figure is half of it: training never uses 2:4 sparsity,
so a table of sparse peaks (as Lightning's is, in part) halves every MFU. GeForce bf16/fp16 figures
are those with fp32 accumulation, which is what mixed precision training uses. Each figure is one
GPU's, in TFLOP/s.
"""

from __future__ import annotations

import re

# (pattern on the normalized device name, label, {dtype: dense TFLOP/s}); the first match wins, so the
# more specific names come first. fp16/bf16 are tensor-core rates; tf32 is fp32 matmuls on tensor cores.
_TABLE: list[tuple[str, str, dict[str, float]]] = [
    (r"\bh200 nvl\b", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"\bh200\b", "H200 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"\bh100 nvl\b", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"\bh100 pcie\b", "H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    (r"\bh100\b", "H100 SXM", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"\bgh200\b", "GH200", {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}),
    (r"\ba100\b", "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"\bl40s\b", "L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bl40\b", "L40", {"bf16": 181.05, "fp16": 181.05, "tf32": 90.5, "fp32": 90.5}),
    (r"\bl4\b", "L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\ba10\b", "A10", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2}),
    (r"\brtx 4090$", "RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
    (r"\brtx 3090$", "RTX 3090", {"bf16": 71.0, "fp16": 71.0, "tf32": 35.6, "fp32": 35.6}),
    # Volta and Turing: fp16 tensor cores, no bf16 or tf32 units (bf16 there is emulated: no peak to compare with).
    (r"\bv100s\b", "V100S PCIe", {"fp16": 130.0, "fp32": 16.4}),
    (r"\bv100 pcie\b", "V100 PCIe", {"fp16": 112.0, "fp32": 14.0}),
    (r"\bv100 sxm2\b", "V100 SXM2", {"fp16": 125.0, "fp32": 15.7}),
    (r"\bt4\b", "T4", {"fp16": 65.0, "fp32": 8.1}),
]


def _normalize(device_name: str) -> str:
    """'NVIDIA A100-SXM4-80GB' -> 'nvidia a100 sxm4 80gb'; 'Tesla V100-PCIE-16GB' -> 'tesla v100 pcie 16gb'."""
    return " ".join(re.sub(r"[-_/,()]", " ", device_name.lower()).split())


def gpu_label(device_name: str) -> str | None:
    """The table's name for this GPU (as torch.cuda.get_device_name gives it), or None if it is not listed."""
    name = _normalize(device_name)
    return next((label for pattern, label, _ in _TABLE if re.search(pattern, name)), None)


def compute_dtype(precision: str, tf32: bool) -> str | None:
    """The arithmetic a Lightning `precision` runs its matmuls in: bf16, fp16, tf32 or fp32 (None: fp64)."""
    head = str(precision).split("-")[0]
    if head == "bf16":
        return "bf16"
    if head == "16":
        return "fp16"
    if head == "32":
        return "tf32" if tf32 else "fp32"
    return None


def peak_flops(device_name: str, precision: str, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of one such GPU for that precision, or None where the table has no figure.

    `tf32`: whether fp32 matmuls run on tensor cores (torch.get_float32_matmul_precision() != "highest").
    """
    name = _normalize(device_name)
    dtype = compute_dtype(precision, tf32)
    for pattern, _, peaks in _TABLE:
        if re.search(pattern, name):
            if dtype == "tf32" and dtype not in peaks:  # no tf32 units: fp32 matmuls run at the fp32 rate
                dtype = "fp32"
            return peaks[dtype] * 1e12 if dtype in peaks else None
    return None
