"""What a run reports: bits per byte, FLOPs per token, torch.compile's fallback, accumulation by tokens."""

from __future__ import annotations

import logging

import torch

from fragment_llm.data.tokenizer import CharTokenizer, train_tokenizer
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.training.metrics import flops_per_token, token_byte_lengths
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
    n = GPT(config).num_params()
    assert flops_per_token(config, n) == 6 * n + 12 * 4 * 4 * 32 * 64


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
