"""Hostile files in a Hugging Face model directory, found by attacking the import: each refused by name."""

from __future__ import annotations

import json
import os
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
