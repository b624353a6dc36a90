"""What a run reports: bits per byte, FLOPs per token and MFU, torch.compile's fallback, accumulation by tokens."""

from __future__ import annotations

import logging

import pytest
import torch

from fragment_llm.data.tokenizer import CharTokenizer, token_byte_lengths, train_tokenizer
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.training.metrics import flops_per_token
from fragment_llm.training.monitoring import SpeedMonitor
from fragment_llm.training.peak_flops import gpu_label, peak_flops
from fragment_llm.training.run import train
from tests.conftest import compose_train, corpus_text
from tests.training_helpers import TINY, scalars


def test_token_byte_lengths_count_utf8_bytes_and_skip_special_tokens():
    char = CharTokenizer("aé€")
    assert token_byte_lengths(char.to_json()).tolist() == [1, 2, 3, 0]  # <|endoftext|> has no bytes

    text = "naïve café — ünïcödé text, " * 20 + "plain ascii words " * 20
    bpe = train_tokenizer("bpe", [text], vocab_size=300)
    lengths = token_byte_lengths(bpe.to_json())
    ids = bpe.encode(text)
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))  # exactly the bytes of the text
    assert lengths[bpe.eot_id] == 0 and len(lengths) == bpe.vocab_size


def test_flops_per_token_is_six_per_parameter_plus_attention():
    config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    n = GPT(config).num_params()  # GPT-2's count: the tied embedding (as the head), without wpe
    assert flops_per_token(GPT(config)) == 6 * n + 12 * 4 * 4 * 32 * 64


def test_flops_per_token_follow_the_switches():
    """RoPE (no wpe), an untied head (wte is only looked up), SwiGLU, 2 kv heads of 24, 4 query heads of 24."""
    C, V, L, T, nh, nkv, hs, hidden = 64, 65, 2, 32, 4, 2, 24, 192
    config = GPTConfig(V, T, L, nh, C, bias=False, position="rope", norm="rmsnorm", mlp="swiglu",
                       tie_embeddings=False, n_kv_head=nkv, head_dim=hs, qk_norm=True)  # fmt: skip
    assert config.hidden_size == hidden  # the multiple of 64 nearest 8/3 * 64 = 170.7
    per_layer = C * (nh + 2 * nkv) * hs + nh * hs * C + C * 2 * hidden + hidden * C + 2 * C + 2 * hs
    matmul_params = L * per_layer + V * C + C  # blocks, lm_head, ln_f
    assert flops_per_token(GPT(config)) == 6 * matmul_params + 12 * L * nh * hs * T


def test_compile_failure_falls_back_and_val_interval_counts_optimizer_steps(tmp_path, monkeypatch, caplog):
    def broken_compile(fn, *args, **kwargs):
        def compiled(*a, **k):
            raise RuntimeError("no C compiler found\nmore details")

        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    overrides = [*TINY, f"data.path={corpus}", "model.compile=true", "trainer.max_steps=4"]
    overrides += ["trainer.val_check_interval=2", f"tokens_per_step={2 * 8 * 32}"]  # 2 batches of 8 x 32 per step
    with caplog.at_level(logging.WARNING):
        result = train(compose_train(tmp_path, overrides))
    assert "torch.compile failed (RuntimeError: no C compiler found)" in caplog.text
    assert result["global_step"] == 4
    run = result["run_dir"]
    assert sorted(scalars(run, "train/loss")) == [0, 1, 2, 3]  # one per optimizer step, 8 batches in all
    # the untrained baseline, after steps 2 and 4, then the whole split after training (TINY limits validations)
    assert sorted(scalars(run, "val/loss")) == [0, 1, 3, 4]
    bpb, loss = scalars(run, "val/bpb")[3], scalars(run, "val/loss")[3]
    assert 0 < bpb <= loss / 0.6931 + 1e-4  # at least one byte per token: bits per byte <= bits per token


@pytest.mark.parametrize(
    ("device_name", "label"),
    [
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA A100 80GB PCIe", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "RTX 3090"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "V100 PCIe"),
        ("Tesla V100S-PCIE-32GB", "V100S PCIe"),
        ("Tesla T4", "T4"),
        # Not the cards above, though their names contain them: no figure rather than a wrong one.
        ("NVIDIA A10G", None),
        ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
        ("NVIDIA GeForce RTX 3090 Ti", None),
        ("NVIDIA GeForce RTX 4090 D", None),
    ],
)
def test_gpu_names_are_matched_to_the_right_datasheet(device_name, label):
    assert gpu_label(device_name) == label


def test_peaks_are_dense_and_follow_the_precision():
    assert peak_flops("NVIDIA H200", "bf16-mixed") == 989.5e12  # 1979 "with sparsity" on the datasheet
    assert peak_flops("NVIDIA A100-SXM4-40GB", "bf16-mixed") == 312e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "32-true", tf32=True) == 156e12
    assert peak_flops("NVIDIA A100-SXM4-40GB", "32-true", tf32=False) == 19.5e12
    assert peak_flops("NVIDIA L4", "16-mixed") == 121e12
    assert peak_flops("Tesla T4", "16-mixed") == 65e12
    assert peak_flops("Tesla T4", "bf16-mixed") is None  # emulated: no peak to compare with
    assert peak_flops("Tesla T4", "32-true", tf32=True) == 8.1e12  # no tf32 units: the fp32 rate
    assert peak_flops("NVIDIA H100 PCIe", "64-true") is None
    assert peak_flops("Some Future GPU", "bf16-mixed") is None


def test_mfu_counts_the_whole_model_even_when_fsdp_shards_it():
    from types import SimpleNamespace

    config = GPTConfig(vocab_size=65, block_size=64, n_layer=2, n_head=2, n_embd=64)
    gpt = GPT(config)
    monitor = SpeedMonitor()
    monitor.setup(None, SimpleNamespace(model=gpt), "fit")  # before the strategy wraps and shards the model
    assert monitor._flops_per_token == flops_per_token(gpt)
