"""Exact-duplicate detection: 64-bit hashes of cleaned documents, about 8 bytes of memory each.

With 64-bit hashes, two different documents collide with probability about n^2 / 2^65: once in
a few thousand corpora of 100 million documents. A collision drops one document; nothing worse.
"""

from __future__ import annotations

import hashlib

import numpy as np


def utf8_hash(data: bytes) -> int:
    """The hash of a cleaned document's UTF-8 bytes."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class SeenHashes:
    """Set of 64-bit document hashes in about 8 bytes each: a sorted array plus a small recent set."""

    def __init__(self, merge_every: int = 1 << 20) -> None:
        self._sorted = np.empty(0, np.uint64)
        self._recent: set[int] = set()
        self._merge_every = merge_every

    def add_new(self, hashes: np.ndarray) -> np.ndarray:
        """Add `hashes`; True where a hash was not seen before (the first of equal ones in `hashes` counts)."""
        new = np.ones(hashes.size, dtype=bool)
        if self._sorted.size and hashes.size:
            pos = np.minimum(np.searchsorted(self._sorted, hashes), self._sorted.size - 1)
            new &= self._sorted[pos] != hashes
        for i, h in enumerate(hashes.tolist()):
            if new[i]:
                if h in self._recent:
                    new[i] = False
                else:
                    self._recent.add(h)
        if len(self._recent) >= self._merge_every:
            self._sorted = np.union1d(self._sorted, np.fromiter(self._recent, np.uint64, len(self._recent)))
            self._recent.clear()
        return new
