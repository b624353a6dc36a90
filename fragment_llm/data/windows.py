"""(input, target) token windows of a split, the map-style dataset the DataLoader reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fragment_llm.data.dataset import ShardedTokens
from fragment_llm.errors import DataError


class TokenWindows(Dataset):
    """(input, target) pairs of `block_size` tokens, the target shifted by one; map-style, index -> window.

    With stride 1 every offset is a sample (training draws them at random); with stride
    `block_size` the windows tile the split without overlap (validation's fixed set).
    `order_seed` puts the windows in one fixed random order: then the first N of them (a
    validation limited by trainer.limit_val_batches) are a uniform sample of the whole split,
    the same sample at every validation.
    `shards` is one .bin file or a split's list of shards (read as one stream). Memmaps are
    opened lazily, so the dataset pickles cheaply into DataLoader worker processes.
    """

    def __init__(self, shards, dtype: str, block_size: int, stride: int = 1, order_seed: int | None = None) -> None:
        paths = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
        self.tokens = ShardedTokens(paths, dtype)
        self.block_size, self.stride = block_size, stride
        n = len(self.tokens)
        self.length = max(0, (n - 1 - block_size) // stride + 1)
        if self.length == 0:
            where = paths[0] if len(paths) == 1 else f"{Path(paths[0]).parent} ({len(paths)} shards)"
            raise DataError(
                f"{where} holds {n} tokens, too few for one window of model.block_size={block_size} "
                "plus its target. Use more data, a larger data.val_fraction, or a smaller model.block_size."
            )
        self.order = None if order_seed is None else np.random.default_rng(order_seed).permutation(self.length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(f"window {i} out of range ({self.length})")
        start = (i if self.order is None else int(self.order[i])) * self.stride
        chunk = torch.from_numpy(self.tokens.read(start, start + self.block_size + 1).astype(np.int64))
        return chunk[:-1], chunk[1:]  # (T,), (T,)
