"""Token dataset: a corpus encoded once into flat token arrays on disk, read through np.memmap.

The cache directory is keyed by everything that decides its contents (source files,
cleaning and split settings, tokenizer settings), so a second run with the same
inputs reuses it instead of re-encoding, and a change to any input builds a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from fragment_llm.data.preprocess import (
    PrepareStats,
    discover_files,
    read_documents,
    sources_fingerprint,
    split_documents,
)
from fragment_llm.data.tokenizer import Tokenizer, train_tokenizer
from fragment_llm.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the on-disk layout or the preprocessing changes meaning
SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id of the vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass(frozen=True)
class TokenCache:
    """A finished cache directory: tokenizer.json, train.bin, val.bin and meta.json."""

    directory: Path
    meta: dict

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    def tokens(self, split: str) -> np.memmap:
        return np.memmap(self.directory / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    @classmethod
    def open(cls, directory: Path) -> TokenCache:
        meta = json.loads((directory / "meta.json").read_text())
        return cls(directory, meta)


def cache_key(fingerprint: Any) -> str:
    blob = json.dumps({"version": CACHE_VERSION, **fingerprint}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def prepare_token_cache(
    paths: str | Sequence[str],
    extensions: Sequence[str],
    exclude_dirs: Sequence[str],
    val_fraction: float,
    tokenizer_kind: str,
    vocab_size: int,
    min_frequency: int,
    cache_root: str | os.PathLike,
) -> TokenCache:
    """Return the token cache for these inputs, building it when no valid one exists."""
    files = discover_files(paths, extensions, exclude_dirs)
    if not files:
        raise DataError(
            f"data.path: no files ending in {list(extensions)} under {paths!r}. Check data.path and data.extensions."
        )
    fingerprint = {
        "sources": sources_fingerprint(files),
        "cleaning": {"extensions": sorted(extensions), "exclude_dirs": sorted(exclude_dirs)},
        "split": {"val_fraction": val_fraction},
        "tokenizer": {
            "kind": tokenizer_kind,
            "vocab_size": vocab_size if tokenizer_kind == "bpe" else None,
            "min_frequency": min_frequency if tokenizer_kind == "bpe" else None,
        },
    }
    directory = Path(cache_root).expanduser().resolve() / cache_key(fingerprint)
    if (directory / "meta.json").is_file():
        cache = TokenCache.open(directory)
        log.info(
            "Reusing token cache %s (%s train / %s val tokens)",
            directory,
            f"{cache.meta['tokens']['train']:,}",
            f"{cache.meta['tokens']['val']:,}",
        )
        return cache
    return _build_cache(files, fingerprint, directory, val_fraction, tokenizer_kind, vocab_size, min_frequency)


def _build_cache(files, fingerprint, directory: Path, val_fraction, tokenizer_kind, vocab_size, min_frequency):
    stats = PrepareStats()
    docs = list(read_documents(files, stats))
    stats.log_summary()
    if not docs:
        raise DataError("data.path: every file was empty or unreadable; there is no text to train on.")
    train_docs, val_docs = split_documents(docs, val_fraction)
    if not train_docs or not val_docs:
        raise DataError(f"data.val_fraction={val_fraction} leaves one split empty; add data or change it.")

    t0 = time.perf_counter()
    tokenizer = train_tokenizer(tokenizer_kind, (text for _, text in docs), vocab_size, min_frequency)
    log.info("Trained %s tokenizer: %d tokens in %.1fs", tokenizer.kind, tokenizer.vocab_size, time.perf_counter() - t0)

    # Build in a private temporary directory, then rename: a crash never leaves a half-written cache,
    # and concurrent builders (e.g. several processes) cannot corrupt each other's files.
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tokenizer.save(tmp / "tokenizer.json")
        dtype = token_dtype(tokenizer.vocab_size)
        counts = {}
        for split, split_docs in zip(SPLITS, (train_docs, val_docs), strict=True):
            counts[split] = _encode_to_file(tokenizer, split_docs, tmp / f"{split}.bin", dtype, split)
        meta = {
            "version": CACHE_VERSION,
            "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "tokenizer_kind": tokenizer.kind,
            "tokens": counts,
            "documents": {"train": len(train_docs), "val": len(val_docs)},
            "files_read": stats.files_read,
            "files_skipped": dict(stats.skipped),
            "fingerprint": fingerprint,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / "meta.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same cache first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Token cache written to %s", directory)
    return TokenCache.open(directory)


def _encode_to_file(tokenizer: Tokenizer, docs: Sequence[str], path: Path, dtype: np.dtype, split: str) -> int:
    """Encode documents, each followed by <|endoftext|>, appending to a flat binary file."""
    t0 = time.perf_counter()
    n_tokens, chunk = 0, 64
    with (
        open(path, "wb") as out,
        tqdm(total=sum(map(len, docs)), unit="char", unit_scale=True, desc=f"Encoding {split}", leave=False) as bar,
    ):
        for start in range(0, len(docs), chunk):
            batch = docs[start : start + chunk]
            for ids in tokenizer.encode_batch(batch):
                arr = np.asarray(ids + [tokenizer.eot_id], dtype=dtype)
                arr.tofile(out)
                n_tokens += arr.size
            bar.update(sum(map(len, batch)))
    secs = time.perf_counter() - t0
    log.info(
        "Encoded %s split: %s tokens in %.1fs (%s tokens/s)",
        split,
        f"{n_tokens:,}",
        secs,
        f"{n_tokens / max(secs, 1e-9):,.0f}",
    )
    return n_tokens


class TokenWindows(Dataset):
    """(input, target) pairs of `block_size` tokens, the target shifted by one.

    With stride 1 every offset is a sample (training draws them at random); with stride
    `block_size` the windows tile the split without overlap (validation's fixed set).
    The memmap is opened lazily so the dataset pickles cheaply into worker processes.
    """

    def __init__(self, path: str | os.PathLike, dtype: str, block_size: int, stride: int = 1) -> None:
        self.path, self.dtype, self.block_size, self.stride = str(path), dtype, block_size, stride
        n = os.path.getsize(self.path) // np.dtype(dtype).itemsize
        self.length = max(0, (n - 1 - block_size) // stride + 1)
        if self.length == 0:
            raise DataError(
                f"{self.path} holds {n} tokens, too few for one window of model.block_size={block_size} "
                "plus its target. Use more data, a larger data.val_fraction, or a smaller model.block_size."
            )
        self._tokens: np.memmap | None = None

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        start = i * self.stride
        chunk = torch.from_numpy(self._tokens[start : start + self.block_size + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]  # (T,), (T,)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tokens": None}
