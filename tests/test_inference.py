import os

import pytest
import torch

from fragment_llm.data.tokenizer import train_tokenizer
from fragment_llm.errors import CheckpointError, PromptError
from fragment_llm.inference import find_latest_checkpoint, load_model
from fragment_llm.model.lit_module import LitGPT

MODEL = dict(block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=False)
OPT = dict(lr=1e-3, min_lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99], warmup_steps=0, decay_steps=None)


def _save_checkpoint(path, tokenizer, vocab_size=None):
    """A checkpoint laid out as Lightning writes it (state_dict, hyper_parameters, our tokenizer)."""
    lit = LitGPT(
        model={**MODEL, "vocab_size": vocab_size or tokenizer.vocab_size},
        optimizer=OPT,
        tokenizer_json=tokenizer.to_json(),
    )
    ckpt = {"state_dict": lit.state_dict(), "hyper_parameters": dict(lit.hparams), "global_step": 0}
    lit.on_save_checkpoint(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.fixture
def char_tok():
    return train_tokenizer("char", ["abcdefgh ij\n"], vocab_size=0)


def test_load_and_generate(tmp_path, char_tok):
    path = _save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", char_tok)
    loaded = load_model(path)
    out = loaded.generate("abc", max_new_tokens=5, temperature=0)
    assert out[0].startswith("abc") and len(char_tok.encode(out[0])) <= 8


def test_prompt_validation(tmp_path, char_tok):
    loaded = load_model(_save_checkpoint(tmp_path / "c.ckpt", char_tok))
    with pytest.raises(PromptError, match="empty"):
        loaded.generate("   ")
    with pytest.raises(PromptError, match="block_size"):
        loaded.generate("a" * 17)
    with pytest.raises(PromptError, match="temperature"):
        loaded.generate("a", temperature=-1)
    with pytest.raises(PromptError, match="top_k"):
        loaded.generate("a", top_k=-2)


def test_pickle_payload_in_a_checkpoint_is_refused(tmp_path, char_tok):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": {}, "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(evil)
    assert not marker.exists()


def test_mismatched_tokenizer_is_refused(tmp_path, char_tok):
    path = _save_checkpoint(tmp_path / "c.ckpt", char_tok, vocab_size=char_tok.vocab_size + 5)
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_model(path)


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_model(tmp_path / "missing.ckpt")


def test_newest_run_is_found(tmp_path, char_tok):
    old = _save_checkpoint(tmp_path / "train" / "a" / "checkpoints" / "last.ckpt", char_tok)
    new = _save_checkpoint(tmp_path / "train" / "multirun" / "x" / "0" / "checkpoints" / "last.ckpt", char_tok)
    os.utime(old, ns=(1, 1))
    assert find_latest_checkpoint(tmp_path) == new
    with pytest.raises(CheckpointError, match="no trained run"):
        find_latest_checkpoint(tmp_path / "empty")
