"""The token cache: formats in, shards out, the report, reuse and invalidation, windows."""

import gzip
import hashlib
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fragment_llm.data import datamodule, pipeline, readers
from fragment_llm.data.datamodule import TextDataModule
from fragment_llm.data.dataset import TokenCache, token_dtype
from fragment_llm.data.dedup import SeenHashes
from fragment_llm.data.pipeline import prepare_token_cache
from fragment_llm.data.tokenizer import EOT_TOKEN, load_tokenizer
from fragment_llm.data.windows import TokenWindows
from fragment_llm.errors import DataError
from tests.conftest import corpus_text


def _prepare(path, cache, data=None, tokenizer=None, cleaning=None):
    data = {"path": str(path), "cache_dir": str(cache), "extensions": [".txt", ".jsonl", ".parquet"], **(data or {})}
    if cleaning:
        data["cleaning"] = cleaning
    return prepare_token_cache(data, {"vocab_size": 300, **(tokenizer or {})})


def _documents(cache):
    """The documents of both splits, decoded (each was followed by <|endoftext|>)."""
    tok = load_tokenizer(cache.tokenizer_path)
    text = tok.decode(np.asarray(cache.tokens("train")).tolist()) + tok.decode(np.asarray(cache.tokens("val")).tolist())
    assert text.endswith(EOT_TOKEN)
    return text.split(EOT_TOKEN)[:-1]


def _report(cache):
    return json.loads((cache.directory / "prepare_report.json").read_text())


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
    assert cache.meta["dtype"] == "uint16" and cache.meta["vocab_size"] == 300
    train, val = np.asarray(cache.tokens("train")), np.asarray(cache.tokens("val"))
    assert (train.size, val.size) == (cache.meta["tokens"]["train"], cache.meta["tokens"]["val"])
    assert 0.05 < val.size / (train.size + val.size) < 0.15
    originals = sorted((corpus / f"part{i}.txt").read_text() for i in range(6))
    docs = _documents(cache)
    assert len(docs) == 7  # six files, one of them cut between train and val
    whole = [d for d in docs if d in originals]
    assert len(whole) == 5 and "".join(sorted(docs)) != "" and sorted("".join(docs)) == sorted("".join(originals))
    manifest = cache.meta
    assert [s["sha256"] for s in manifest["sources"]] == [
        hashlib.sha256((corpus / f"part{i}.txt").read_bytes()).hexdigest() for i in range(6)
    ]
    assert manifest["tokenizer_sha256"] == hashlib.sha256(cache.tokenizer_path.read_bytes()).hexdigest()
    assert manifest["config"]["cleaning"]["nfc"] is True


def test_jsonl_parquet_and_gz_inputs_all_arrive_deduplicated(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    docs = [f"Document number {i}: " + corpus_text(3000)[i * 37 : i * 37 + 400] for i in range(40)]
    (root / "a.txt").write_text(docs[0])
    (root / "b.txt.gz").write_bytes(gzip.compress(docs[1].encode()))
    lines = [json.dumps({"text": d, "id": i}) for i, d in enumerate(docs[2:20], start=2)]
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    (root / "d.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps({"text": d}) for d in docs[20:30]).encode()))
    pq.write_table(pa.table({"text": docs[30:] + [docs[5], docs[0]]}), root / "e.parquet", row_group_size=4)
    cache = _prepare(root, tmp_path / "cache")
    assert sorted(_documents(cache)) == sorted(docs)  # the two repeated documents were removed
    report = _report(cache)
    assert report["duplicates_removed"] == 2 and report["files_read"] == 5 and report["documents_read"] == 42


def test_report_counts_every_kind_of_bad_input(tmp_path):
    root = tmp_path / "messy"
    root.mkdir()
    (root / "good.txt").write_text(corpus_text(20_000))
    (root / "short.txt").write_text("hi")
    (root / "empty.txt").write_text(" \n\n ")
    (root / "zero.txt").write_text("")
    (root / "bin.txt").write_bytes(b"\x00\x01\x02 binary")
    (root / "invalid.txt").write_bytes(b"caf\xe9 " + corpus_text(2000).encode())
    (root / "records.jsonl").write_text('{"text": "fine record here"}\n{broken\n{"body": "x"}\n{"text": 5}\n\n')
    pq.write_table(pa.table({"body": ["x"]}), root / "nocol.parquet")
    os.symlink(tmp_path / "outside.txt", root / "escape.txt")
    (tmp_path / "outside.txt").write_text("secret")
    cache = _prepare(root, tmp_path / "cache", cleaning={"min_doc_chars": 5})
    r = _report(cache)
    assert r["files_found"] == 9 and r["files_read"] == 6 and r["files_skipped_count"] == 3
    reasons = {os.path.basename(s["path"]): s["reason"] for s in r["files_skipped"]}
    assert reasons["bin.txt"] == "binary (NUL bytes)"
    assert reasons["nocol.parquet"].startswith("no column 'text'")
    assert "outside its source root" in reasons["escape.txt"]
    assert r["documents_too_short"] == 3  # short.txt, empty.txt and zero.txt
    assert r["records_skipped"] == {"malformed JSON": 1, "no field 'text'": 1, "field 'text' is not a string": 1}
    assert any(e.endswith("records.jsonl:2: malformed JSON (Expecting property name enclosed in double quotes)")
               or ":2: malformed JSON" in e for e in r["record_errors"])  # fmt: skip
    assert r["cleaning"]["invalid_bytes_replaced"] == 1
    assert r["bytes_in"] > r["bytes_out"] > 0 and r["tokens"]["train"] > 0


def test_strict_mode_turns_every_skip_into_an_error(tmp_path):
    root = tmp_path / "strict"
    root.mkdir()
    (root / "good.txt").write_text(corpus_text(20_000))
    (root / "records.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(DataError, match=r"records.jsonl:2: malformed JSON.*data.strict=false"):
        _prepare(root, tmp_path / "cache", data={"strict": True})
    (root / "records.jsonl").unlink()
    pq.write_table(pa.table({"body": ["x"]}), root / "nocol.parquet")
    with pytest.raises(DataError, match=r"nocol.parquet: no column 'text'"):
        _prepare(root, tmp_path / "cache", data={"strict": True})
    (root / "nocol.parquet").unlink()
    (root / "bin.txt").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match=r"bin.txt: binary"):
        _prepare(root, tmp_path / "cache", data={"strict": True})


@pytest.mark.parametrize("content", ["", "  \n", "\x00\x00"])
def test_an_empty_corpus_is_a_clear_error(tmp_path, content):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "a.txt").write_text(content)
    with pytest.raises(DataError, match="data.path"):
        _prepare(root, tmp_path / "cache")


def test_a_folder_without_matching_files_says_what_to_type(tmp_path):
    root = tmp_path / "notes"
    for name in ("a.txt", "b.txt", "c.md"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text("some text")
    with pytest.raises(DataError) as e:
        _prepare(root, tmp_path / "cache", data={"extensions": [".py"]})
    assert "it holds 2 .txt, 1 .md files" in str(e.value)
    assert "data=text" in str(e.value) and "'data.extensions=[.txt,.md]'" in str(e.value)


def test_unreadable_files_are_skipped_with_their_reason(corpus, tmp_path, monkeypatch):
    real_open = readers._HashingReader.__init__

    def locked(self, path):
        if str(path).endswith("part3.txt"):
            raise PermissionError(13, "Permission denied")
        real_open(self, path)

    monkeypatch.setattr(readers._HashingReader, "__init__", locked)
    r = _report(_prepare(corpus, tmp_path / "cache"))
    assert r["files_read"] == 5 and r["files_skipped"][0]["reason"] == "unreadable (Permission denied)"


def test_raw_inputs_are_never_modified(corpus, tmp_path):
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in corpus.iterdir()}
    for p in corpus.iterdir():
        p.chmod(0o444)
    _prepare(corpus, tmp_path / "cache")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in corpus.iterdir()} == before


def test_second_run_reuses_the_cache_without_building(corpus, tmp_path, monkeypatch):
    first = _prepare(corpus, tmp_path / "cache")
    monkeypatch.setattr(pipeline._Builder, "build", lambda *a, **k: pytest.fail("rebuilt the cache"))
    again = _prepare(corpus, tmp_path / "cache")
    assert again.directory == first.directory and again.meta == first.meta


CHANGES = {
    "vocab_size": dict(tokenizer={"vocab_size": 320}),
    "special_tokens": dict(tokenizer={"special_tokens": [EOT_TOKEN, "<|pad|>"]}),
    "train_chars": dict(tokenizer={"train_chars": 1000}),
    "char tokenizer": dict(tokenizer={"kind": "char"}),
    "val_fraction": dict(data={"val_fraction": 0.2}),
    "text_field": dict(data={"text_field": "body"}),
    "shard_tokens": dict(data={"shard_tokens": 2048}),
    "cleaning": dict(cleaning={"collapse_whitespace": True}),
    "dedup": dict(cleaning={"dedup": False}),
}


@pytest.mark.parametrize("change", [*CHANGES, "file edited", "file added"])
def test_changing_any_input_builds_a_new_cache(corpus, tmp_path, change):
    first = _prepare(corpus, tmp_path / "cache")
    if change == "file edited":
        (corpus / "part0.txt").write_text("changed text " * 100)
    elif change == "file added":
        (corpus / "part9.txt").write_text("new text " * 100)
    second = _prepare(corpus, tmp_path / "cache", **CHANGES.get(change, {}))
    assert second.directory != first.directory and (second.directory / "manifest.json").is_file()


def test_shards_are_fixed_size_and_windows_read_across_them(corpus, tmp_path):
    cache = _prepare(corpus, tmp_path / "cache", data={"shard_tokens": 1024})
    shards = cache.meta["shards"]["train"]
    assert len(shards) > 5 and {s["tokens"] for s in shards[:-1]} == {1024} and shards[-1]["tokens"] <= 1024
    flat = np.concatenate([np.fromfile(p, dtype=np.uint16) for p in cache.shard_paths("train")])
    windows = TokenWindows(cache.shard_paths("train"), "uint16", block_size=64)
    for i in (0, 1000, 1024 - 30, len(windows) - 1):  # 1024 - 30: a window that spans two shards
        x, y = windows[i]
        assert x.tolist() == flat[i : i + 64].tolist() and y.tolist() == flat[i + 1 : i + 65].tolist()


def test_worker_processes_and_streamed_pieces_give_identical_shards(corpus, tmp_path, monkeypatch):
    (corpus / "extra.jsonl").write_text("\n".join(json.dumps({"text": corpus_text(5000)[i:]}) for i in range(50)))
    one = _prepare(corpus, tmp_path / "one", data={"prepare_workers": 1})
    monkeypatch.setattr(pipeline, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(readers, "PIECE_BYTES", 700)  # every text file now streams in many pieces
    many = _prepare(corpus, tmp_path / "many", data={"prepare_workers": 2})
    assert _report(many)["encode_workers"] == 2
    for split in ("train", "val"):
        assert np.array_equal(np.asarray(one.tokens(split)), np.asarray(many.tokens(split)))


def test_a_damaged_cache_is_refused_with_what_to_do(corpus, tmp_path):
    cache = _prepare(corpus, tmp_path / "cache")
    manifest = json.loads((cache.directory / "manifest.json").read_text())
    manifest["shards"]["train"][0]["file"] = "../../outside.bin"
    (cache.directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="damaged.*Delete that directory"):
        TokenCache.open(cache.directory)
    (cache.directory / "val_000000.bin").unlink()
    with pytest.raises(DataError, match="damaged"):
        _prepare(corpus, tmp_path / "cache")


def test_builds_abandoned_by_a_dead_process_are_cleaned_up(corpus, tmp_path):
    import socket

    cache_root = tmp_path / "cache"
    first = _prepare(corpus, cache_root)
    host = socket.gethostname()
    dead = cache_root / f".{first.directory.name}.{host}.999999999.tmp"  # no such pid
    alive = cache_root / f".{first.directory.name}.{host}.{os.getppid()}.tmp"  # a live process: kept
    dead.mkdir()
    alive.mkdir()
    shutil.rmtree(first.directory)
    _prepare(corpus, cache_root)
    assert not dead.exists() and alive.exists()


def test_seen_hashes_finds_repeats_within_and_across_batches():
    seen = SeenHashes(merge_every=4)
    assert seen.add_new(np.array([1, 2, 2, 3], np.uint64)).tolist() == [True, True, False, True]
    assert seen.add_new(np.array([3, 4, 5, 6, 1], np.uint64)).tolist() == [False, True, True, True, False]
    assert seen.add_new(np.array([7, 6], np.uint64)).tolist() == [True, False]


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


def test_datamodule_setup_on_another_rank_finds_the_finished_cache(corpus, tmp_path, monkeypatch):
    data = {"path": str(corpus), "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "num_workers": 0}
    rank0 = TextDataModule(data=data, tokenizer={"vocab_size": 300}, block_size=16)
    rank0.prepare_data()
    monkeypatch.setattr(pipeline._Builder, "build", lambda *a, **k: pytest.fail("rank 1 rebuilt the cache"))
    rank1 = TextDataModule(data=data, tokenizer={"vocab_size": 300}, block_size=16)
    rank1.setup("fit")
    assert rank1.cache.directory == rank0.cache.directory and rank1.tokenizer.vocab_size == 300
    x, y = next(iter(rank1.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    vx, _ = next(iter(rank1.val_dataloader()))
    assert vx.shape == (4, 16)


def test_waiting_ranks_fail_early_when_no_build_of_the_cache_is_visible(tmp_path):
    # Rank 0 builds in `.<name>.<host>.<pid>.tmp` beside the cache; on another node's own disk nothing appears.
    with pytest.raises(DataError, match=r"data\.cache_per_node=true"):
        TokenCache.wait_for(tmp_path / "0123456789abcdef", unseen_s=0.3, poll_s=0.05)


def test_waiting_ranks_wait_as_long_as_a_build_is_in_progress(corpus, tmp_path):
    import threading
    import time

    built = _prepare(corpus, tmp_path / "elsewhere")
    target = tmp_path / "cache" / built.directory.name
    building = target.with_name(f".{target.name}.node0.123.tmp")
    building.mkdir(parents=True)

    def finish_later():
        time.sleep(1.0)  # longer than unseen_s: only the visible build keeps the waiter waiting
        shutil.rmtree(building)
        shutil.copytree(built.directory, target)

    thread = threading.Thread(target=finish_later)
    thread.start()
    cache = TokenCache.wait_for(target, unseen_s=0.5, poll_s=0.05)
    thread.join()
    assert cache.meta["tokens"] == built.meta["tokens"]


@pytest.mark.parametrize("per_node", [False, True])
def test_global_rank_0_builds_the_cache_unless_each_node_builds_its_own(corpus, tmp_path, monkeypatch, per_node):
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    data = {"path": str(corpus), "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "cache_per_node": per_node}
    calls = []
    monkeypatch.setattr(datamodule, "prepare_token_cache", lambda d, t, build=True: calls.append(build))
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # global rank 1: the first process of the second node
    monkeypatch.setenv("LOCAL_RANK", "0")
    TextDataModule(data=data, tokenizer={"vocab_size": 300}, block_size=16).prepare_data()
    assert calls == [per_node]


def test_loaders_pin_memory_and_use_workers_on_gpus_only(corpus, tmp_path):
    from types import SimpleNamespace

    data = {"path": str(corpus), "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "num_workers": None}
    module = TextDataModule(data=data, tokenizer={"vocab_size": 300}, block_size=16)
    module.setup("fit")
    on = {}
    for device in ("cpu", "cuda"):
        module.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        loader = module.val_dataloader()
        on[device] = (loader.pin_memory, loader.num_workers)
    assert on == {"cpu": (False, 0), "cuda": (True, 2)}
