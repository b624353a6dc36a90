"""The decoding engine: KV cache equivalence, context window policy, sampling controls, seeds."""

import pytest
import torch

from fragment_llm.config import SamplingConfig
from fragment_llm.inference.engine import generate_tokens
from fragment_llm.inference.kv_cache import KVCache, forward_cached
from fragment_llm.inference.token_sampling import next_token
from tests.inference_helpers import tiny_gpt

BLOCK = 16
PROMPT = [3, 1, 4, 1, 5]


@pytest.fixture(scope="module")
def model():
    return tiny_gpt()


def run(model, prompt=PROMPT, num_samples=1, seed=0, **settings):
    """All sampled tokens, (steps, num_samples)."""
    s = SamplingConfig(**{"stop_at_eot": False, **settings})
    steps = list(generate_tokens(model, prompt, s, num_samples, torch.Generator().manual_seed(seed)))
    return torch.stack(steps) if steps else torch.empty(0, num_samples, dtype=torch.long)


@pytest.mark.parametrize("bias", [True, False])
def test_cached_forward_gives_the_training_forwards_logits(bias):
    model = tiny_gpt(bias=bias)
    with torch.no_grad():  # non-zero biases and LayerNorm gains, so every weight the cached step uses matters
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "ln" in name else 0.0))
    idx = torch.randint(0, 97, (3, BLOCK))
    cache = KVCache(model, batch_size=3)
    logits = [forward_cached(model, idx[:, :5], cache)]  # prefill 5 positions, then one at a time
    logits += [forward_cached(model, idx[:, t : t + 1], cache) for t in range(5, BLOCK)]
    for t, got in zip(range(5, BLOCK + 1), logits, strict=True):
        want = model(idx[:, :t])[0][:, -1, :]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="block_size"):
        forward_cached(model, idx[:, :1], cache)  # the cache is full
    with pytest.raises(ValueError, match="another model"):
        forward_cached(tiny_gpt(bias=bias), idx[:, :1], KVCache(model, batch_size=3))


@pytest.mark.parametrize("slide_tokens", [None, 1, 7, BLOCK])
def test_greedy_with_cache_equals_without_past_block_size(model, slide_tokens):
    cached = run(model, num_samples=2, max_new_tokens=50, temperature=0, slide_tokens=slide_tokens)
    uncached = run(
        model, num_samples=2, max_new_tokens=50, temperature=0, slide_tokens=slide_tokens, use_kv_cache=False
    )
    assert cached.shape == (50, 2)  # 5 + 50 tokens: the window slid several times
    assert torch.equal(cached, uncached)
    assert len(set(cached[:, 0].tolist())) >= 3  # a real sequence, not one repeated token


@torch.no_grad()
def nanogpt_greedy(model, prompt: list[int], steps: int) -> torch.Tensor:
    """nanoGPT's generate at temperature 0: the whole context, cropped to its last block_size tokens, every step."""
    idx = torch.tensor([prompt])
    for _ in range(steps):
        logits, _ = model(idx[:, -BLOCK:])
        idx = torch.cat([idx, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return idx[0, len(prompt) :]


def test_sliding_one_token_at_a_time_is_nanogpts_crop(model):
    ours = run(model, max_new_tokens=40, temperature=0, slide_tokens=1)[:, 0]
    assert torch.equal(ours, nanogpt_greedy(model, PROMPT, 40))


def test_prompt_longer_than_the_context_continues_from_its_last_tokens(model):
    long_prompt = torch.randint(0, 97, (40,)).tolist()
    cached = run(model, prompt=long_prompt, max_new_tokens=20, temperature=0)
    keep = BLOCK + 1 - BLOCK // 4  # the window right after a slide
    assert torch.equal(cached, run(model, prompt=long_prompt[-keep:], max_new_tokens=20, temperature=0))
    assert torch.equal(cached, run(model, prompt=long_prompt, max_new_tokens=20, temperature=0, use_kv_cache=False))


def test_overflow_stop_ends_when_the_context_is_full(model):
    for cache in (True, False):
        tokens = run(model, max_new_tokens=50, temperature=0, overflow="stop", use_kv_cache=cache)
        assert len(tokens) == BLOCK + 1 - len(PROMPT)  # the last one is predicted from a full context
    assert torch.equal(tokens[:, 0], run(model, max_new_tokens=50, temperature=0)[: len(tokens), 0])


def test_top_k_one_and_tiny_top_p_equal_greedy(model):
    greedy = run(model, num_samples=2, max_new_tokens=30, temperature=0)
    for seed in (0, 1):
        assert torch.equal(run(model, num_samples=2, seed=seed, max_new_tokens=30, temperature=1.5, top_k=1), greedy)
        top_p = run(model, num_samples=2, seed=seed, max_new_tokens=30, temperature=1.5, top_k=0, top_p=1e-6)
        assert torch.equal(top_p, greedy)
    sampled = run(model, num_samples=2, max_new_tokens=30, temperature=1.5, top_k=0)
    assert not torch.equal(sampled, greedy)


def test_top_k_and_top_p_keep_only_the_head_of_the_distribution():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)

    def drawn(**settings):
        s = SamplingConfig(**{"temperature": 1.0, "top_k": 0, **settings})
        return torch.cat([next_token(logits, s, g) for _ in range(400)]).bincount(minlength=4)

    top2 = drawn(top_k=2)  # renormalized over the two best: 0.5 / 0.8 and 0.3 / 0.8
    assert torch.allclose(top2 / top2.sum(), torch.tensor([0.0, 0.625, 0.0, 0.375]), atol=0.07)
    assert set(drawn(top_k=3, top_p=0.7).nonzero().flatten().tolist()) == {1, 3}  # top-p within the top-k
    assert set(drawn(top_k=2, top_p=0.81).nonzero().flatten().tolist()) == {1, 3}
    assert set(drawn(top_p=0.7).nonzero().flatten().tolist()) == {1, 3}  # 0.5 < 0.7, then 0.5 + 0.3 reaches it
    assert set(drawn(top_p=0.8).nonzero().flatten().tolist()) == {1, 3}  # exactly reached: nothing more needed
    assert set(drawn(top_p=0.81).nonzero().flatten().tolist()) == {1, 2, 3}
    counts = drawn()  # no truncation: frequencies follow the probabilities
    assert torch.allclose(counts / counts.sum(), probs[0], atol=0.06)


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    g = torch.Generator().manual_seed(0)

    def share_of_top(t):
        s = SamplingConfig(temperature=t, top_k=0)
        return (torch.cat([next_token(logits, s, g) for _ in range(1000)]) == 0).float().mean().item()

    assert share_of_top(0.1) > 0.99 and 0.5 < share_of_top(1.0) < 0.8 and share_of_top(10.0) < 0.45


def test_repetition_penalty_lowers_repeats(model):
    def repeats(penalty):
        tokens = run(model, max_new_tokens=40, temperature=0, repetition_penalty=penalty)[:, 0].tolist()
        return len(tokens) - len(set(tokens))

    plain = repeats(1.0)
    assert plain >= 20 and repeats(1.5) < plain / 2 and repeats(3.0) <= 2


def test_repetition_penalty_shrinks_seen_logits_from_both_sides():
    logits = torch.tensor([[2.0, -2.0, 1.9, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    s = SamplingConfig(temperature=0, repetition_penalty=2.0)
    assert next_token(logits, s, None, seen).item() == 2  # 2.0 / 2 = 1.0 < 1.9
    s = SamplingConfig(temperature=0, repetition_penalty=1.0)
    assert next_token(logits, s, None, seen).item() == 0


def test_seeds_reproduce_and_samples_differ(model):
    a = run(model, num_samples=3, seed=7, max_new_tokens=20, temperature=1.0, top_k=0)
    assert torch.equal(a, run(model, num_samples=3, seed=7, max_new_tokens=20, temperature=1.0, top_k=0))
    assert not torch.equal(a, run(model, num_samples=3, seed=8, max_new_tokens=20, temperature=1.0, top_k=0))
    assert not torch.equal(a[:, 0], a[:, 1])  # the samples of a batch are independent draws


def test_zero_new_tokens_yields_nothing(model):
    assert run(model, max_new_tokens=0).numel() == 0


def test_memory_does_not_grow_with_max_new_tokens(model):
    """Only the context window is kept, so an effectively unbounded generation (REPL, stream) is fine."""
    s = SamplingConfig(max_new_tokens=10**12, temperature=0, stop_at_eot=False)
    steps = generate_tokens(model, PROMPT, s, 1, None)
    assert len([next(steps) for _ in range(3 * BLOCK)]) == 3 * BLOCK
