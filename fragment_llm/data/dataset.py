"""The token cache: a finished cache directory on disk, its splits read through np.memmap.

A cache directory holds `manifest.json` (what went in, what came out, the shard list),
`prepare_report.json`, `tokenizer.json` and the shards of each split (see shards.py).
Nothing is loaded into memory: windows are sliced from memory-mapped shards (windows.py).
No torch here: `prepare.py` and its encoder processes run without it.
"""

from __future__ import annotations

import bisect
import glob
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fragment_llm.data.shards import SHARD_NAME, token_dtype
from fragment_llm.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["ShardedTokens", "TokenCache", "token_dtype"]

CACHE_VERSION = 2  # bump when the on-disk layout or the preparation changes meaning
SPLITS = ("train", "val")


class ShardedTokens:
    """A split's shards as one read-only token sequence: `len()` and `read(start, stop)`."""

    def __init__(self, paths: Sequence[str | os.PathLike], dtype: str) -> None:
        self.paths, self.dtype = [str(p) for p in paths], np.dtype(dtype)
        sizes = [os.path.getsize(p) // self.dtype.itemsize for p in self.paths]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64).tolist()  # (S+1,)
        self._maps: list[np.memmap | None] = [None] * len(self.paths)  # opened on first use

    def __len__(self) -> int:
        return self.starts[-1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the split, across shard boundaries if need be."""
        parts = []
        shard = bisect.bisect_right(self.starts, start) - 1
        while start < stop and shard < len(self.paths):
            lo, hi = self.starts[shard], self.starts[shard + 1]
            if self._maps[shard] is None:
                self._maps[shard] = np.memmap(self.paths[shard], dtype=self.dtype, mode="r")
            parts.append(self._maps[shard][start - lo : min(stop, hi) - lo])
            start = min(stop, hi)
            shard += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        arr = self.read(0, len(self))
        return arr.astype(dtype) if dtype is not None else np.asarray(arr)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": [None] * len(self.paths)}  # memmaps reopen in worker processes


@dataclass(frozen=True)
class TokenCache:
    """A finished cache directory; `meta` is its manifest."""

    directory: Path
    meta: dict

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / "tokenizer.json"

    def shard_paths(self, split: str) -> list[Path]:
        return [self.directory / s["file"] for s in self.meta["shards"][split]]

    def tokens(self, split: str) -> ShardedTokens:
        return ShardedTokens(self.shard_paths(split), self.meta["dtype"])

    @classmethod
    def wait_for(
        cls, directory: Path, unseen_s: float = 300.0, timeout_s: float = 24 * 3600, poll_s: float = 1.0
    ) -> TokenCache:
        """Open the cache another process is building, once it is finished (its manifest is renamed in last).

        The builder works in `.<name>.<host>.<pid>.tmp` beside the cache from its first step. When neither
        that nor the cache has been seen for `unseen_s`, the builder has failed, or it writes where this
        process cannot see: a cache directory on each node's own disk.
        """
        log.info("Waiting for the first process to build the token cache %s", directory)
        start = last_seen = time.monotonic()
        while not (directory / "manifest.json").is_file():
            now = time.monotonic()
            if any(directory.parent.glob(f".{glob.escape(directory.name)}.*.tmp")):
                last_seen = now
            if now - last_seen > unseen_s or now - start > timeout_s:
                raise DataError(
                    f"data.cache_dir: no token cache appeared at {directory} after {now - start:.0f}s, and no build "
                    "of it is in progress there. Rank 0 builds the cache for every process: put data.cache_dir on "
                    "storage all nodes share, or set data.cache_per_node=true to build one on each node (if rank 0 "
                    "failed, its log says why)."
                )
            time.sleep(poll_s)
        return cls.open(directory)

    @classmethod
    def open(cls, directory: Path) -> TokenCache:
        """Open a finished cache, checking that the manifest and the shards on disk agree."""

        def corrupt(why: str) -> DataError:
            return DataError(f"token cache {directory} is damaged ({why}). Delete that directory to rebuild it.")

        try:
            meta = json.loads((directory / "manifest.json").read_text())
            dtype = np.dtype(meta["dtype"])
            shards = {split: list(meta["shards"][split]) for split in SPLITS}
            tokens = {split: int(meta["tokens"][split]) for split in SPLITS}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise corrupt(f"unreadable manifest.json: {e}") from None
        if meta.get("version") != CACHE_VERSION or dtype not in (np.uint16, np.uint32):
            raise corrupt(f"version {meta.get('version')} / dtype {dtype}")
        for split in SPLITS:
            total = 0
            for shard in shards[split]:
                name = shard.get("file", "") if isinstance(shard, dict) else ""
                if not SHARD_NAME.match(name) or not name.startswith(split):  # never a path that leaves the cache
                    raise corrupt(f"bad shard name {name!r}")
                path = directory / name
                if not path.is_file() or path.stat().st_size != shard["tokens"] * dtype.itemsize:
                    raise corrupt(f"{name} is missing or has the wrong size")
                total += shard["tokens"]
            if total != tokens[split]:
                raise corrupt(f"{split} shards hold {total} tokens, the manifest says {tokens[split]}")
        return cls(directory, meta)
