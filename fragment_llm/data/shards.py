"""Token shards: a split's token stream written as fixed-size flat binary files.

`train_000000.bin`, `train_000001.bin`, ... hold `shard_tokens` tokens each (the last one
fewer), as raw little-endian uint16 or uint32 with no header, so any tool can memmap
them (`np.memmap(path, dtype=..., mode="r")`). Concatenated in order they are the
split's token stream. The manifest lists them with their token counts.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

SHARD_NAME = re.compile(r"^(train|val)_(\d{6})\.bin$")
_WRITE_BUFFER = 1 << 20


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned integer type that holds every id of the vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.bin"


class ShardWriter:
    """Appends tokens to one split's shards, rolling to a new file every `shard_tokens` tokens.

    `truncate(n)` takes the stream back to its first n tokens: a document that turns out,
    once fully read, to be a duplicate or too short is removed after the fact.
    """

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory, self.split, self.dtype, self.shard_tokens = directory, split, np.dtype(dtype), shard_tokens
        self.tokens = 0  # total written so far
        self._counts: list[int] = []  # tokens in each shard
        self._file = None

    def write(self, ids: np.ndarray) -> None:
        ids = ids.astype(self.dtype, copy=False)
        while ids.size:
            if self._file is None or self._counts[-1] == self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self._counts[-1]
            part, ids = ids[:room], ids[room:]
            self._file.write(part.tobytes())
            self._counts[-1] += part.size
            self.tokens += part.size

    def truncate(self, n: int) -> None:
        if n >= self.tokens:
            return
        self._close_file()
        while self._counts and self.tokens - self._counts[-1] >= n:  # whole shards past n
            self.tokens -= self._counts.pop()
            (self.directory / shard_name(self.split, len(self._counts))).unlink()
        if self._counts:
            keep = self._counts[-1] - (self.tokens - n)
            path = self.directory / shard_name(self.split, len(self._counts) - 1)
            os.truncate(path, keep * self.dtype.itemsize)
            self._counts[-1], self.tokens = keep, n
            self._file = open(path, "ab", buffering=_WRITE_BUFFER)

    def close(self) -> list[dict]:
        """Finish writing; the shard list for the manifest."""
        self._close_file()
        return [{"file": shard_name(self.split, i), "tokens": c} for i, c in enumerate(self._counts)]

    def _open_next(self) -> None:
        self._close_file()
        self._counts.append(0)
        self._file = open(self.directory / shard_name(self.split, len(self._counts) - 1), "wb", buffering=_WRITE_BUFFER)

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
