"""Hostile files in a Hugging Face model directory, found by attacking the import: each refused by name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from fragment_llm.data.hf_tokenizer import load_hf_tokenizer
from fragment_llm.errors import CheckpointError, TokenizerError
from fragment_llm.interop.hf_dir import HFModelDir
from tests.hf_tokenizer_helpers import gpt2_dir

BACKTRACKING = r"(\w+\s?)*$"  # catastrophic on a long word followed by a non-word character


def test_a_decoy_child_list_cannot_hide_a_sequences_real_steps(tmp_path):
    directory = gpt2_dir(tmp_path / "gpt2", 300)
    spec = json.loads((directory / "tokenizer.json").read_text())
    evil = {"type": "Split", "pattern": {"Regex": BACKTRACKING}, "behavior": "Isolated", "invert": False}
    # `tokenizers` reads a pre-tokenizer Sequence's `pretokenizers`; an empty `normalizers` beside it is a decoy.
    spec["pre_tokenizer"] = {"type": "Sequence", "normalizers": [], "pretokenizers": [evil, spec["pre_tokenizer"]]}
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"pre_tokenizer: normalizers does not belong in this component"):
        load_hf_tokenizer(directory)
    spec["pre_tokenizer"].pop("normalizers")  # without the decoy, the pattern itself is refused
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"is not one we know to be safe to run"):
        load_hf_tokenizer(directory)


def _model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    return directory


def test_config_json_must_be_a_regular_file_inside_the_directory(tmp_path):
    outside = tmp_path / "private.json"
    outside.write_text(json.dumps({"model_type": "gpt2"}))
    directory = _model_dir(tmp_path)
    (directory / "config.json").symlink_to(outside)
    with pytest.raises(CheckpointError, match=r"config\.json: not readable JSON \(it links to .*outside"):
        HFModelDir.open(directory)
    (directory / "config.json").unlink()
    (directory / "config.json").symlink_to("/dev/zero")  # would read for ever
    with pytest.raises(CheckpointError, match=r"config\.json: not readable JSON \(it links to /dev/zero"):
        HFModelDir.open(directory)
    (directory / "config.json").unlink()
    os.mkfifo(directory / "config.json")  # would block for ever
    with pytest.raises(CheckpointError, match=r"config\.json: not readable JSON \(not a regular file\)"):
        HFModelDir.open(directory)


def test_tokenizer_files_are_not_read_through_links_out(tmp_path):
    source = gpt2_dir(tmp_path / "elsewhere", 300)
    directory = gpt2_dir(tmp_path / "gpt2", 300)
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer.json").symlink_to(source / "tokenizer.json")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json.*links to .*outside"):
        load_hf_tokenizer(directory)


def _config_json(family: str, **changes) -> dict:
    from fragment_llm.interop.hf_config import to_hf_config
    from fragment_llm.model.gpt import GPTConfig

    rope = dict(position="rope", norm="rmsnorm", mlp="swiglu", bias=False) if family == "llama" else {}
    config = GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, **rope)
    return {**to_hf_config(config, family, {"bos_token_id": 0, "eos_token_id": 0}, "float32"), **changes}


@pytest.mark.parametrize(
    "family, changes, named",
    [
        ("llama", dict(rope_theta=1e308, rope_parameters=None), "rope_theta=1e+308"),
        ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 5e-324}), "rope_parameters.rope_theta"),
        ("llama", dict(rms_norm_eps=1e-300), "rms_norm_eps"),
        ("llama", dict(rms_norm_eps=1e10), "rms_norm_eps"),
        ("gpt2", dict(layer_norm_epsilon=5e-324), "layer_norm_epsilon"),
        # The nested field at fault is named (it used to say rope_theta=None).
        ("llama", dict(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4}), "rope_parameters.rope_type=yarn"),
        ("llama", dict(rope_parameters={"rope_type": "default"}, rope_theta=None), "rope_parameters.rope_theta=None"),
        ("llama", dict(rope_parameters={"rope_type": "default", "rope_theta": "9"}), "rope_parameters.rope_theta=9"),
        ("llama", dict(rope_parameters={"full_attention": {"rope_type": "default"}}), "rope_parameters.full_attention"),
        ("llama", dict(rope_parameters=["default"]), "rope_parameters="),
    ],
)
def test_extreme_or_misplaced_config_values_are_refused_by_field(family, changes, named):
    from fragment_llm.interop.hf_config import from_hf_config

    with pytest.raises(CheckpointError, match=f"^m/config.json: {re.escape(named)}"):
        from_hf_config(_config_json(family, **changes), "m/config.json")
    # The same file with a sane value loads; a theta given beside rope_parameters is the one transformers uses.
    assert from_hf_config(_config_json(family), "m/config.json")[1].norm_eps == 1e-5
    _, config = from_hf_config(_config_json("llama", rope_parameters={"rope_type": "default"}, rope_theta=5e5), "m")
    assert config.rope_base == 5e5
