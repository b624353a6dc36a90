"""The training sampler: one seeded stream of windows, resumable at any position, also under DDP."""

import pytest

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

    def rank_indices(rank: int) -> list[int]:
        return list(ResumableRandomSampler(1000, 64, 3, position=lambda: position["n"], rank=rank, world_size=world))

    single = list(ResumableRandomSampler(1000, 64, 3))
    uninterrupted = [rank_indices(r) for r in range(world)]
    assert sorted(uninterrupted[0] + uninterrupted[1]) == sorted(single)  # the ranks share one stream
    position["n"] = consumed_batches * batch * world
    resumed = [rank_indices(r) for r in range(world)]
    for r in range(world):
        rest = uninterrupted[r][consumed_batches * batch :]
        assert len(resumed[r]) == 32 and resumed[r][: len(rest)] == rest


def test_lightning_leaves_the_sampler_to_deal_ranks_itself():
    # Lightning wraps any other sampler in a DistributedSamplerWrapper that shuffles each pass, so a pass
    # restarted at a resume position would deal other windows than the uninterrupted run's.
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = ResumableRandomSampler(100, 16, 0, rank=1, world_size=2)
    assert isinstance(DataLoader(range(100), batch_size=4, sampler=sampler).sampler, DistributedSampler)
    assert len(sampler) == 8


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        ResumableRandomSampler(0, 10, seed=0)
