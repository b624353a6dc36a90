import numpy as np
import pytest
import torch

import fragment_llm.data.dataset as dataset_mod
from fragment_llm.data.dataset import TokenWindows, prepare_token_cache, token_dtype
from fragment_llm.data.tokenizer import load_tokenizer
from fragment_llm.errors import DataError
from tests.conftest import corpus_text


def _prepare(corpus, cache, **overrides):
    kwargs = dict(
        paths=str(corpus),
        extensions=[".txt"],
        exclude_dirs=[],
        val_fraction=0.1,
        tokenizer_kind="bpe",
        vocab_size=300,
        min_frequency=2,
        cache_root=cache,
    )
    kwargs.update(overrides)
    return prepare_token_cache(**kwargs)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    text = corpus_text(60_000)
    for i in range(6):
        (root / f"part{i}.txt").write_text(text[i * 10_000 : (i + 1) * 10_000])
    return root


def test_cache_holds_every_document_followed_by_eot(corpus, tmp_path):
    cache = _prepare(corpus, tmp_path / "cache")
    tok = load_tokenizer(cache.tokenizer_path)
    assert cache.meta["dtype"] == "uint16" and cache.meta["vocab_size"] == 300
    train, val = np.asarray(cache.tokens("train")), np.asarray(cache.tokens("val"))
    assert (train.size, val.size) == (cache.meta["tokens"]["train"], cache.meta["tokens"]["val"])
    assert 0.05 < val.size / (train.size + val.size) < 0.15
    assert train[-1] == tok.eot_id and val[-1] == tok.eot_id
    decoded = tok.decode(train.tolist()) + tok.decode(val.tolist())
    assert decoded.count("<|endoftext|>") == cache.meta["documents"]["train"] + cache.meta["documents"]["val"]
    original = "".join((corpus / f"part{i}.txt").read_text() for i in range(6))
    assert sorted(decoded.replace("<|endoftext|>", "")) == sorted(original)


def test_second_run_reuses_the_cache_without_encoding(corpus, tmp_path, monkeypatch):
    first = _prepare(corpus, tmp_path / "cache")
    monkeypatch.setattr(dataset_mod, "train_tokenizer", lambda *a, **k: pytest.fail("re-trained the tokenizer"))
    monkeypatch.setattr(dataset_mod, "_encode_to_file", lambda *a, **k: pytest.fail("re-encoded the corpus"))
    again = _prepare(corpus, tmp_path / "cache")
    assert again.directory == first.directory


@pytest.mark.parametrize("change", ["tokenizer", "split", "file"])
def test_changing_any_input_builds_a_new_cache(corpus, tmp_path, change):
    first = _prepare(corpus, tmp_path / "cache")
    overrides = {}
    if change == "tokenizer":
        overrides = {"vocab_size": 320}
    elif change == "split":
        overrides = {"val_fraction": 0.2}
    else:
        (corpus / "part0.txt").write_text("changed text " * 100)
    second = _prepare(corpus, tmp_path / "cache", **overrides)
    assert second.directory != first.directory and (second.directory / "meta.json").is_file()


def test_no_matching_files_is_a_clear_error(corpus, tmp_path):
    with pytest.raises(DataError, match=r"no files ending in \['.md'\]"):
        _prepare(corpus, tmp_path / "cache", extensions=[".md"])


def test_token_dtype_widens_for_big_vocabularies():
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_windows_are_inputs_and_targets_shifted_by_one(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(100, dtype=np.uint16).tofile(path)
    train = TokenWindows(path, "uint16", block_size=8)
    assert len(train) == 100 - 8
    x, y = train[5]
    assert x.dtype == torch.int64 and x.tolist() == list(range(5, 13)) and y.tolist() == list(range(6, 14))
    val = TokenWindows(path, "uint16", block_size=8, stride=8)
    assert len(val) == (100 - 1) // 8
    starts = [val[i][0][0].item() for i in range(len(val))]
    assert starts == list(range(0, 8 * len(val), 8))  # non-overlapping tiling
    assert val[len(val) - 1][1][-1].item() <= 99


def test_too_few_tokens_for_one_window_is_a_clear_error(tmp_path):
    path = tmp_path / "val.bin"
    np.arange(5, dtype=np.uint16).tofile(path)
    with pytest.raises(DataError, match="model.block_size=8"):
        TokenWindows(path, "uint16", block_size=8)
