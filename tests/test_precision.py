"""precision=auto: the rule in fragment_llm/precision.py, on mocked hardware."""

from __future__ import annotations

import pytest
import torch

from fragment_llm import precision
from fragment_llm.precision import BF16_CPU_MIN_EMBD, generation_dtype, resolve_training_precision


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _amx(monkeypatch, present: bool) -> None:
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: present)


def test_explicit_precision_is_kept():
    assert resolve_training_precision("bf16-mixed", "cpu", 128) == ("bf16-mixed", "as configured")
    assert resolve_training_precision("32-true", "gpu", 4096) == ("32-true", "as configured")


@pytest.mark.parametrize("accelerator", ["auto", "cpu"])
def test_cpu_without_amx_trains_in_fp32_whatever_the_size(cpu_only, monkeypatch, accelerator):
    _amx(monkeypatch, False)
    for n_embd in (128, 384, 4096):
        chosen, why = resolve_training_precision("auto", accelerator, n_embd)
        assert chosen == "32-true" and "without AMX" in why


def test_cpu_with_amx_uses_bf16_from_the_measured_width_on(cpu_only, monkeypatch):
    _amx(monkeypatch, True)
    assert resolve_training_precision("auto", "cpu", 128)[0] == "32-true"  # measured: bf16 0.82x at 128
    assert resolve_training_precision("auto", "cpu", BF16_CPU_MIN_EMBD - 1)[0] == "32-true"
    assert resolve_training_precision("auto", "auto", BF16_CPU_MIN_EMBD)[0] == "bf16-mixed"
    chosen, why = resolve_training_precision("auto", "cpu", 384)  # measured: bf16 1.43x at 384
    assert chosen == "bf16-mixed" and "AMX" in why and "384" in why
    assert 128 < BF16_CPU_MIN_EMBD <= 384  # between the two measured shapes
    assert resolve_training_precision("auto", "mps", 384)[0] == "32-true"  # not a CPU


def test_gpus_use_bf16_only_with_bf16_units(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Some GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_, **__: True)  # true under emulation too
    for capability, expected in (
        ((7, 0), "16-mixed"),
        ((7, 5), "16-mixed"),
        ((8, 0), "bf16-mixed"),
        ((9, 0), "bf16-mixed"),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_, c=capability: c)
        chosen, why = resolve_training_precision("auto", "gpu", 128)
        assert chosen == expected and f"{capability[0]}.{capability[1]}" in why
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (7, 0))
    assert generation_dtype(torch.device("cuda"), 128)[0] == torch.float16
    _amx(monkeypatch, False)
    assert resolve_training_precision("auto", "cpu", 384)[0] == "32-true"  # the CPU asked for, not the GPU


def test_generation_follows_the_same_rule_on_cpus(monkeypatch):
    cpu = torch.device("cpu")
    _amx(monkeypatch, False)
    assert generation_dtype(cpu, 384)[0] == torch.float32
    _amx(monkeypatch, True)
    assert generation_dtype(cpu, 128)[0] == torch.float32
    assert generation_dtype(cpu, 384)[0] == torch.bfloat16
    assert generation_dtype(cpu, None)[0] == torch.float32  # width unknown: fp32
    assert generation_dtype(torch.device("mps"), 384)[0] == torch.float16


def test_the_amx_probe_answers_on_this_machine():
    assert isinstance(precision.cpu_has_amx(), bool)
