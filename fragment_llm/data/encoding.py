"""Cleaning and encoding of work items, in parallel worker processes for big corpora.

A worker turns an `Item` (a text piece, a block of JSON lines, a batch of parquet
rows) into token ids: parse, clean, drop documents that are too short, hash each
document (for exact-duplicate removal, decided in the main process, which sees them all
in order) and encode, with `<|endoftext|>` (the tokenizer's end-of-sequence token) after each
document and its `doc_prefix_ids` (an imported Llama's BOS) before it. Results come back in
item order, whatever the number of workers, so the token cache does not depend on it.
At most a few tasks are in flight, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from fragment_llm.data.cleaning import CleaningCounts, CleaningRules, clean_bytes, clean_text
from fragment_llm.data.dedup import utf8_hash
from fragment_llm.data.readers import Item
from fragment_llm.data.tokenizer import BPETokenizer, tokenizer_from_json

TASK_BYTES = 2 << 20  # items are grouped into tasks of about this much text
MAX_ERRORS_KEPT = 20  # malformed records reported by line, per item


@dataclass(frozen=True)
class EncodeSettings:
    """Everything a worker needs, sent to it once."""

    tokenizer_json: str
    use_tiktoken: bool  # False when the main process found tiktoken disagreeing with `tokenizers`
    rules: CleaningRules
    min_doc_chars: int
    text_field: str
    dtype: str


@dataclass
class ItemResult:
    tokens: np.ndarray  # every kept document's ids, each followed by <|endoftext|> (unless a piece ends no document)
    doc_tokens: np.ndarray  # (D,) tokens per document
    doc_hashes: np.ndarray  # (D,) uint64 hash of each document's cleaned text
    doc_bytes: np.ndarray  # (D,) UTF-8 bytes of each document's cleaned text
    bytes_in: int = 0
    cleaning: CleaningCounts = field(default_factory=CleaningCounts)
    too_short: int = 0
    records_skipped: Counter = field(default_factory=Counter)  # reason -> count
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line or row, message), the first few
    # text pieces only: characters, and leading/trailing whitespace, to judge a document's length across pieces
    chars: int = 0
    lead_ws: int = 0
    trail_ws: int = 0


class ItemEncoder:
    def __init__(self, settings: EncodeSettings) -> None:
        tokenizer = tokenizer_from_json(settings.tokenizer_json, "tokenizer")
        if isinstance(tokenizer, BPETokenizer) and not settings.use_tiktoken:
            tokenizer.disable_fast_path()
        self.settings = settings
        self.tokenizer = tokenizer
        self.encode = tokenizer.encode_array
        self.prefix = np.array(tokenizer.doc_prefix_ids, dtype=np.uint32)
        self.eot = np.array([tokenizer.eot_id], dtype=np.uint32)
        self.dtype = np.dtype(settings.dtype)

    def __call__(self, item: Item) -> ItemResult:
        if item.kind == "text":
            return self._text(item)
        if item.kind == "jsonl":
            return self._documents(self._jsonl_texts(item), item)
        if item.kind == "records":
            return self._documents(self._record_texts(item), item)
        return ItemResult(*_empty(self.dtype))  # an `end` marker

    def _text(self, item: Item) -> ItemResult:
        counts = CleaningCounts()
        text = clean_bytes(item.payload, self.settings.rules, counts, strip_bom=item.file_start)
        ids = self.tokenizer.encode_piece(text, doc_start=item.doc_start)
        if item.doc_start and self.prefix.size:
            ids = np.concatenate([self.prefix, ids])
        if item.doc_end:
            ids = np.concatenate([ids, self.eot])
        stripped = text.lstrip()
        lead = len(text) - len(stripped)
        trail = len(text) - len(text.rstrip()) if stripped else 0
        data = text.encode()
        return ItemResult(
            tokens=ids.astype(self.dtype),
            doc_tokens=np.array([ids.size], np.int64),
            doc_hashes=np.array([utf8_hash(data)], np.uint64),
            doc_bytes=np.array([len(data)], np.int64),
            bytes_in=len(item.payload),
            cleaning=counts,
            chars=len(text),
            lead_ws=lead,
            trail_ws=trail,
        )

    def _jsonl_texts(self, item: Item) -> Iterator[tuple[int, str | None, str | None]]:
        """(line number, text, why it was skipped) for each non-blank line."""
        field_name = self.settings.text_field
        for n, line in enumerate(item.payload.split(b"\n"), start=item.first_line):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:  # also invalid UTF-8
                yield n, None, f"malformed JSON ({str(e)[:80]})"
                continue
            if not isinstance(record, dict) or field_name not in record:
                yield n, None, f"no field {field_name!r}"
                continue
            text = record[field_name]
            yield (n, text, None) if isinstance(text, str) else (n, None, f"field {field_name!r} is not a string")

    def _record_texts(self, item: Item) -> Iterator[tuple[int, str | None, str | None]]:
        for n, text in enumerate(item.payload, start=item.first_line):
            yield (n, text, None) if isinstance(text, str) else (n, None, f"{self.settings.text_field!r} is null")

    def _documents(self, texts: Iterable[tuple[int, str | None, str | None]], item: Item) -> ItemResult:
        s = self.settings
        result = ItemResult(*_empty(self.dtype))
        if item.kind == "jsonl":
            result.bytes_in = len(item.payload)  # the lines as read; for records, the text values
        arrays, lengths, hashes, sizes = [], [], [], []
        for n, raw, skip in texts:
            if skip is not None:
                result.records_skipped[skip.split(" (")[0]] += 1
                if len(result.errors) < MAX_ERRORS_KEPT:
                    result.errors.append((n, skip))
                continue
            if item.kind == "records":
                result.bytes_in += len(raw.encode())
            text = clean_text(raw, s.rules, result.cleaning)
            if len(text.strip()) < s.min_doc_chars:
                result.too_short += 1
                continue
            ids = self.encode(text)
            data = text.encode()
            arrays += [self.prefix, ids, self.eot]
            lengths.append(self.prefix.size + ids.size + 1)
            hashes.append(utf8_hash(data))
            sizes.append(len(data))
        if arrays:
            result.tokens = np.concatenate(arrays).astype(self.dtype)
            result.doc_tokens = np.array(lengths, np.int64)
            result.doc_hashes = np.array(hashes, np.uint64)
            result.doc_bytes = np.array(sizes, np.int64)
        return result


def _empty(dtype: np.dtype) -> tuple[np.ndarray, ...]:
    return np.empty(0, dtype), np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.int64)


# --- the worker pool ---------------------------------------------------------------------------------

_worker: ItemEncoder | None = None


def _init_worker(settings: EncodeSettings) -> None:
    global _worker
    _worker = ItemEncoder(settings)


def _run_task(items: list[Item]) -> list[ItemResult]:
    return [_worker(item) for item in items]


def _tasks(items: Iterable[Item]) -> Iterator[list[Item]]:
    task, size = [], 0
    for item in items:
        task.append(item)
        size += item.nbytes
        if size >= TASK_BYTES or len(task) >= 1024:
            yield task
            task, size = [], 0
    if task:
        yield task


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextmanager
def _quiet_tokenizers_fork():
    """`tokenizers` warns in every forked child once its thread pool has run (training did); the children
    never use it, so say so through the variable it reads, for the moment of the fork only."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def encode_items(items: Iterable[Item], settings: EncodeSettings, workers: int) -> Iterator[tuple[Item, ItemResult]]:
    """(item, result) pairs in item order; `workers` > 1 runs a process pool with few tasks in flight."""
    if workers <= 1:
        encoder = ItemEncoder(settings)
        for item in items:
            yield item, encoder(item)
        return
    # fork: workers start in milliseconds and inherit the imports. Elsewhere (macOS, Windows) fork is unsafe.
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with _quiet_tokenizers_fork():
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(settings,))
    try:
        pending: deque = deque()
        for task in _tasks(items):
            pending.append((task, pool.apply_async(_run_task, (task,))))
            while len(pending) > 2 * workers:
                task, result = pending.popleft()
                yield from zip(task, result.get(), strict=True)
        while pending:
            task, result = pending.popleft()
            yield from zip(task, result.get(), strict=True)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
