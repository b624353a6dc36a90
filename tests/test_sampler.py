"""The training sampler: one seeded stream of windows, resumable at any position, also under DDP."""

from itertools import islice

import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

from fragment_llm.data.sampler import ResumableRandomSampler


def _stream(sampler: ResumableRandomSampler, passes: int) -> list[int]:
    return [i for _ in range(passes) for i in sampler]


def test_the_order_follows_from_the_seed_alone():
    a, b = ResumableRandomSampler(1000, 64, seed=1), ResumableRandomSampler(1000, 64, seed=1)
    assert _stream(a, 3) == _stream(b, 3)
    assert list(ResumableRandomSampler(1000, 64, seed=2)) != list(ResumableRandomSampler(1000, 64, seed=1))
    assert len(a) == 64 and all(0 <= i < 1000 for i in _stream(a, 2))


@pytest.mark.parametrize("consumed", [0, 24, 64, 100, 130])
def test_a_pass_starts_where_training_left_the_stream(consumed):
    position = {"n": 0}
    sampler = ResumableRandomSampler(1000, 64, seed=7, position=lambda: position["n"])
    stream = []
    for _ in range(4):  # whole passes, as an uninterrupted run draws them
        position["n"] = len(stream)
        stream += list(sampler)
    position["n"] = consumed  # a resumed run: its first pass continues the stream, full length
    resumed = list(sampler)
    assert len(resumed) == 64 and resumed == stream[consumed : consumed + 64]


def test_under_ddp_every_rank_continues_its_own_share_exactly():
    world, batch, consumed_batches = 2, 4, 3  # each rank trained 3 batches of 4 before the interruption
    position = {"n": 0}
    sampler = ResumableRandomSampler(1000, 64, seed=3, position=lambda: position["n"])

    def rank_indices(rank: int) -> list[int]:
        wrapper = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
        return list(wrapper)

    uninterrupted = [rank_indices(r) for r in range(world)]
    position["n"] = consumed_batches * batch * world
    resumed = [rank_indices(r) for r in range(world)]
    for r in range(world):
        rest = uninterrupted[r][consumed_batches * batch :]
        assert list(islice(resumed[r], len(rest))) == rest


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        ResumableRandomSampler(0, 10, seed=0)
