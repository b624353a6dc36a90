"""The training sampler: random windows from one seeded stream, resumable at any position."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data.distributed import DistributedSampler


class ResumableRandomSampler(DistributedSampler):
    """Window indices drawn uniformly with replacement, `num_samples` per pass (all ranks together).

    The indices form one endless stream, made of chunks of `num_samples` where chunk `c` is
    drawn by `numpy.random.default_rng([seed, c])`: the stream depends on the seed alone.
    Each pass (`__iter__`) deals out the next `num_samples` indices of the stream, starting at
    `position()`: the number of indices the training (all ranks) has consumed so far. A resumed
    run asks for the position its checkpoint recorded and gets exactly the windows the
    interrupted run had not yet trained on, wherever Lightning draws its epoch boundaries (they
    move by a batch when a run resumes at an epoch's end) and however many batches it
    prefetched and dropped.

    Under DDP or FSDP, rank r of `world_size` takes the pass's indices r, r + world_size, ...:
    the ranks together train on the stream a single process would, and each continues its own
    share exactly after a resume. It is a DistributedSampler so that Lightning leaves it as it
    is: Lightning's own wrapper shuffles every pass, and a pass restarted at the resume position
    would then deal other windows to each rank.
    """

    def __init__(
        self,
        num_windows: int,
        num_samples: int,
        seed: int,
        position: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_windows <= 0 or num_samples < world_size:
            raise ValueError(f"need windows and samples to draw, got {num_windows=} {num_samples=} {world_size=}")
        super().__init__(range(num_windows), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.num_windows, self.pass_size, self.position = num_windows, num_samples, position
        self.num_samples = num_samples // world_size  # this rank's share of a pass (DistributedSampler's meaning)

    def _chunk(self, c: int) -> np.ndarray:
        return np.random.default_rng([self.seed, c]).integers(0, self.num_windows, size=self.pass_size)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        chunk, offset = divmod(self.position(), self.pass_size)
        indices = self._chunk(chunk)[offset:]
        if offset:
            indices = np.concatenate([indices, self._chunk(chunk + 1)[:offset]])
        return iter(indices[self.rank :: self.num_replicas][: self.num_samples].tolist())
