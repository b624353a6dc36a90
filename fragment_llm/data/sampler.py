"""The training sampler: random windows from one seeded stream, resumable at any position."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    """Window indices drawn uniformly with replacement, `num_samples` per pass.

    The indices form one endless stream, made of chunks of `num_samples` where chunk `c` is
    drawn by `numpy.random.default_rng([seed, c])`: the stream depends on the seed alone.
    Each pass (`__iter__`) yields the next `num_samples` indices of the stream, starting at
    `position()`: the number of indices the training has consumed so far. A resumed run asks
    for the position its checkpoint recorded and gets exactly the windows the interrupted run
    had not yet trained on, wherever Lightning draws its epoch boundaries (they move by a batch
    when a run resumes at an epoch's end) and however many batches it prefetched and dropped.

    Under DDP, Lightning's DistributedSamplerWrapper lists a pass and deals index i to rank
    i % world_size, so `position` counts the indices of all ranks (batches x batch size x
    world size) and every rank sees the same continuation as without the interruption.
    """

    def __init__(self, num_windows: int, num_samples: int, seed: int, position: Callable[[], int] = lambda: 0) -> None:
        if num_windows <= 0 or num_samples <= 0:
            raise ValueError(f"need windows and samples to draw, got {num_windows=} {num_samples=}")
        self.num_windows, self.num_samples, self.seed, self.position = num_windows, num_samples, seed, position

    def _chunk(self, c: int) -> np.ndarray:
        return np.random.default_rng([self.seed, c]).integers(0, self.num_windows, size=self.num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        chunk, offset = divmod(self.position(), self.num_samples)
        indices = self._chunk(chunk)[offset:]
        if offset:
            indices = np.concatenate([indices, self._chunk(chunk + 1)[:offset]])
        return iter(indices.tolist())
