"""What each validation scores: the baseline before training, partial estimates, the whole split at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fragment_llm.data.windows import TokenWindows
from fragment_llm.training.run import train
from tests.conftest import compose_train, corpus_text
from tests.training_helpers import TINY, scalars


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(corpus_text(40_000), encoding="utf-8")
    return path


def _train(root: Path, corpus: Path, *overrides: str) -> dict:
    return train(compose_train(root, [*TINY, f"data.path={corpus}", "trainer.max_steps=16", *overrides]))


def test_limited_validations_change_neither_training_nor_the_final_figure(tmp_path, corpus):
    limited = _train(tmp_path / "limited", corpus, "trainer.limit_val_batches=2", "data.eval_batch_size=4")
    whole = _train(tmp_path / "whole", corpus, "trainer.limit_val_batches=1.0", "data.eval_batch_size=4")
    assert scalars(limited["run_dir"], "train/loss") == scalars(whole["run_dir"], "train/loss")
    # The final figure is the whole split in both runs (validations at steps 8 and 16, logged at 7 and 15); the
    # limited run's periodic ones scored 8 windows, then a validation of its own scored all (logged at 16).
    assert limited["val_loss"] == pytest.approx(whole["val_loss"], abs=1e-6)
    partial, full = scalars(limited["run_dir"], "val/loss"), scalars(whole["run_dir"], "val/loss")
    assert sorted(partial) == [0, 7, 15, 16] and sorted(full) == [0, 7, 15]
    assert partial[7] != full[7] and partial[16] == pytest.approx(full[15], abs=1e-6)
    # The baseline: the untrained model on num_sanity_val_steps=2 batches, logged at step 0, the same in both.
    assert limited["initial_val_loss"] == whole["initial_val_loss"] == partial[0] == full[0]
    assert limited["initial_val_loss"] == pytest.approx(np.log(limited_vocab(limited)), rel=0.1)


def limited_vocab(result: dict) -> int:
    import json

    return len(json.loads((Path(result["run_dir"]) / "tokenizer.json").read_text())["chars"]) + 1


def test_no_baseline_when_asked_and_none_on_resume(tmp_path, corpus):
    off = _train(tmp_path / "off", corpus, "trainer.num_sanity_val_steps=0", "trainer.max_steps=4")
    assert off["initial_val_loss"] is None and off["val_loss"] is not None
    resumed = _train(tmp_path / "off", corpus, "trainer.max_steps=6", "ckpt_path=last")
    assert resumed["initial_val_loss"] is None and resumed["global_step"] == 6


def test_val_windows_in_a_fixed_random_order_cover_the_split_once(tmp_path):
    path = tmp_path / "val.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    tiling = TokenWindows(path, "uint16", block_size=8, stride=8)
    shuffled = TokenWindows(path, "uint16", block_size=8, stride=8, order_seed=0)
    starts = [int(shuffled[i][0][0]) for i in range(len(shuffled))]
    assert sorted(starts) == [int(tiling[i][0][0]) for i in range(len(tiling))]  # the same windows
    assert starts != sorted(starts)  # in another order: any first N are spread over the split
    assert starts == [int(TokenWindows(path, "uint16", 8, 8, order_seed=0)[i][0][0]) for i in range(len(tiling))]
    first = np.array(starts[: len(starts) // 4])
    assert first.min() < 250 and first.max() > 750
