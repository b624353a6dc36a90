"""The architecture switches: each trains, the KV cache follows it, presets compose, bad shapes are refused,
parameters are grouped by role, and checkpoints from before the switches still load and write the same text."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from fragment_llm import load_model
from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.inference.kv_cache import KVCache, forward_cached
from fragment_llm.model.gpt import GPT, PARAM_ROLES, GPTConfig, smear
from fragment_llm.training.config_checks import validate_train_config
from fragment_llm.training.run import _check_resumable
from tests.conftest import REPO_ROOT, compose_train
from tests.inference_helpers import MODEL, char_tokenizer, save_checkpoint
from tests.test_inference_engine import run

FIXTURES = Path(__file__).parent / "fixtures"

# One switch at a time away from GPT-2's layout, then combinations (Llama-, Qwen3-like and the modern preset).
SWITCHES = {
    "gpt2": {},
    "rope": {"position": "rope"},
    "rmsnorm": {"norm": "rmsnorm"},
    "swiglu": {"mlp": "swiglu"},
    "relu2": {"mlp": "relu2", "mlp_hidden": 48},
    "qk_norm": {"qk_norm": True},
    "untied": {"tie_embeddings": False},
    "softcap": {"logit_softcap": 3.0},
    "zero_init": {"zero_init_proj": True, "tie_embeddings": False},
    "gqa": {"n_kv_head": 1},
    "head_dim": {"head_dim": 12, "n_kv_head": 1},
    "llama": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "tie_embeddings": False, "bias": False},
    "qwen3": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "qk_norm": True, "rope_base": 1e6},
    "q_norm_gain": {"qk_norm": True, "q_norm_gain": 2.0},
    "smear": {"smear": True},
    "x0_skip": {"x0_skip": True},
    "modern": {"position": "rope", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True, "tie_embeddings": False,
               "zero_init_proj": True, "logit_softcap": 15.0},
    "modern+": {"position": "rope", "norm": "rmsnorm", "mlp": "relu2", "qk_norm": True, "tie_embeddings": False,
                "zero_init_proj": True, "logit_softcap": 15.0, "q_norm_gain": 2.0, "smear": True, "x0_skip": True},
}  # fmt: skip


def randomized(config: GPTConfig, seed: int = 0) -> GPT:
    """A model whose every parameter (gains and zero-initialised projections too) is random and matters."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(1.0 + 0.3 * torch.randn_like(p) if p.dim() == 1 else 0.5 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("switch", SWITCHES)
def test_every_switch_trains(switch):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**MODEL, "vocab_size": 23, **SWITCHES[switch]}))
    opt = torch.optim.AdamW(model.optimizer_param_groups(0.1), lr=3e-3)
    data = torch.arange(200) * 7 % 23  # a periodic sequence: easy to learn, impossible to guess at first
    losses = []
    for _ in range(40):
        starts = torch.randint(0, 200 - 17, (8,))
        rows = data[starts[:, None] + torch.arange(17)]  # (8, 17)
        _, loss = model(rows[:, :-1], rows[:, 1:].contiguous())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("switch", SWITCHES)
def test_cached_logits_equal_the_full_forwards_for_every_switch(switch):
    model = randomized(GPTConfig(**{**MODEL, "vocab_size": 23, **SWITCHES[switch]}))
    idx = torch.randint(0, 23, (2, MODEL["block_size"]))
    full, _ = model(idx, idx)  # (2, T, vocab): every position
    cache = KVCache(model, batch_size=2)
    cached = [forward_cached(model, idx[:, :5], cache)]  # prefill 5 positions, then one at a time
    cached += [forward_cached(model, idx[:, t : t + 1], cache) for t in range(5, MODEL["block_size"])]
    torch.testing.assert_close(torch.stack(cached, dim=1), full[:, 4:], rtol=1e-4, atol=1e-4)
    assert cache.k.shape[2] == model.config.n_kv_heads  # the cache holds the key/value heads only


@pytest.mark.parametrize("switch", ["rope", "qwen3", "modern", "head_dim"])
@pytest.mark.parametrize("slide", [1, 5])
def test_cached_greedy_decoding_equals_uncached_across_window_slides(switch, slide):
    """50 new tokens after 5: the 16-token window slides many times; RoPE positions restart in each window."""
    model = randomized(GPTConfig(**{**MODEL, "vocab_size": 23, **SWITCHES[switch]}))
    kw = dict(max_new_tokens=50, temperature=0, slide_tokens=slide)
    assert torch.equal(run(model, **kw), run(model, use_kv_cache=False, **kw))


def test_rope_follows_hugging_faces_rotate_half_convention():
    """Position p rotates the pair (x[i], x[i + hs/2]) by p * base^(-2i/hs): a relative encoding of q.k."""
    model = GPT(GPTConfig(**{**MODEL, "vocab_size": 23, "position": "rope", "rope_base": 100.0}))
    hs = model.config.head_size
    cos, sin = model.rope(3, 4)
    angle = 3 * 100.0 ** (-torch.arange(0, hs, 2) / hs)
    torch.testing.assert_close(cos[0], torch.cat([angle.cos(), angle.cos()]))
    torch.testing.assert_close(sin[0], torch.cat([angle.sin(), angle.sin()]))
    assert "transformer.wpe.weight" not in model.state_dict() and "rope_cos" not in model.state_dict()


def test_parameters_are_grouped_by_role_each_exactly_once():
    for switch in ("gpt2", "modern", "qwen3"):
        model = GPT(GPTConfig(**{**MODEL, "vocab_size": 23, **SWITCHES[switch]}))
        roles = model.params_by_role()
        names = [n for role in PARAM_ROLES for n, _ in roles[role]]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # every parameter once
        assert all(n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n, _ in roles["hidden_matrices"])
        assert all(p.dim() == 1 for _, p in roles["gains_and_biases"])
        tied = model.config.tie_embeddings
        assert [n for n, _ in roles["head"]] == ([] if tied else ["lm_head.weight"])  # a tied head is the embedding
        assert "transformer.wte.weight" in dict(roles["embeddings"])
    qwen3 = GPT(GPTConfig(**{**MODEL, "vocab_size": 23, **SWITCHES["qwen3"]}))
    q_norm = dict(qwen3.params_by_role()["gains_and_biases"])
    assert "transformer.h.0.attn.q_norm.weight" in q_norm and "transformer.h.0.attn.k_norm.weight" in q_norm


def test_parameter_names_and_shapes_follow_gpt2_with_combined_projections():
    cfg = GPTConfig(vocab_size=23, block_size=16, n_layer=1, n_head=4, n_embd=32, bias=False, position="rope",
                    norm="rmsnorm", mlp="swiglu", mlp_hidden=40, qk_norm=True, tie_embeddings=False,
                    n_kv_head=2, head_dim=12)  # fmt: skip
    shapes = {n: tuple(p.shape) for n, p in GPT(cfg).named_parameters()}
    assert shapes == {
        "transformer.wte.weight": (23, 32),
        "transformer.h.0.ln_1.weight": (32,),
        "transformer.h.0.attn.c_attn.weight": ((4 + 2 * 2) * 12, 32),  # [q; k; v]
        "transformer.h.0.attn.q_norm.weight": (12,),
        "transformer.h.0.attn.k_norm.weight": (12,),
        "transformer.h.0.attn.c_proj.weight": (32, 4 * 12),
        "transformer.h.0.ln_2.weight": (32,),
        "transformer.h.0.mlp.c_fc.weight": (2 * 40, 32),  # [gate; up]
        "transformer.h.0.mlp.c_proj.weight": (32, 40),
        "transformer.ln_f.weight": (32,),
        "lm_head.weight": (23, 32),
    }


def test_swiglu_is_down_of_silu_gate_times_up():
    model = randomized(GPTConfig(**{**MODEL, "vocab_size": 23, "mlp": "swiglu", "mlp_hidden": 24}))
    mlp, x = model.transformer.h[0].mlp, torch.randn(2, 3, MODEL["n_embd"])
    gate, up = mlp.c_fc.weight[:24], mlp.c_fc.weight[24:]
    b_gate, b_up = mlp.c_fc.bias[:24], mlp.c_fc.bias[24:]
    expected = mlp.c_proj(torch.nn.functional.silu(x @ gate.T + b_gate) * (x @ up.T + b_up))
    torch.testing.assert_close(mlp(x), expected)


def test_zero_init_starts_every_block_as_the_identity_and_the_untied_head_at_zero():
    model = GPT(GPTConfig(**{**MODEL, "vocab_size": 23, **SWITCHES["zero_init"]}))
    zeroed = [p for n, p in model.named_parameters() if n.endswith(("c_proj.weight", "lm_head.weight"))]
    assert len(zeroed) == 2 * MODEL["n_layer"] + 1 and not any(p.any() for p in zeroed)
    assert model.transformer.h[0].mlp.c_fc.weight.std() > 0.01


def test_smear_and_x0_skip_start_as_the_model_without_them_and_q_norm_gain_sets_qs_gain():
    idx = torch.randint(0, 23, (2, 16), generator=torch.Generator().manual_seed(0))
    modern = {**SWITCHES["modern"], "zero_init_proj": False}  # blocks that do something from the start
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**MODEL, vocab_size=23, **modern))(idx, idx)[1]
    torch.manual_seed(0)
    both = GPT(GPTConfig(**MODEL, vocab_size=23, **modern, smear=True, x0_skip=True, q_norm_gain=2.0))
    assert not both.smear_gain.any() and not both.x0_gains.any() and both.x0_gains.numel() == MODEL["n_layer"] - 1
    assert all((b.attn.q_norm.weight == 2).all() and (b.attn.k_norm.weight == 1).all() for b in both.transformer.h)
    with torch.no_grad():
        for b in both.transformer.h:
            b.attn.q_norm.weight.fill_(1.0)
    torch.testing.assert_close(both(idx, idx)[1], plain, atol=0, rtol=0)


def test_smear_adds_a_share_of_the_previous_positions_embedding():
    x, gain = torch.randn(2, 5, 4), torch.randn(4)
    smeared = smear(x, gain)
    torch.testing.assert_close(smeared[:, 0], x[:, 0])  # the window's first position has no predecessor
    torch.testing.assert_close(smeared[:, 1:], x[:, 1:] + gain * x[:, :-1])
    previous = torch.randn(2, 1, 4)  # a cached step: the position before the window's last one
    torch.testing.assert_close(smear(x[:, 3:], gain, previous), x[:, 3:] + gain * torch.cat((previous, x[:, 3:4]), 1))


def test_logit_softcap_bounds_the_logits():
    model = randomized(GPTConfig(**{**MODEL, "vocab_size": 23, "logit_softcap": 2.0}))
    logits, _ = model(torch.randint(0, 23, (2, 16)), torch.randint(0, 23, (2, 16)))
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.5


def test_old_checkpoint_loads_and_writes_the_same_text():
    """tests/fixtures: a checkpoint and its generations, made with the code before the switches existed."""
    expected = json.loads((FIXTURES / "gpt2_layout_pre_issue12.json").read_text())
    lm = load_model(FIXTURES / "gpt2_layout_pre_issue12.ckpt", device="cpu")
    assert lm.model.config.position == "learned" and lm.model.config.tie_embeddings
    kw = dict(max_new_tokens=40, stop_at_eot=False)
    assert lm.generate("abc", temperature=0, **kw) == expected["greedy"]
    assert lm.generate("abc", temperature=1.0, seed=7, **kw) == expected["sampled_seed_7"]
    assert lm.generate("abc", temperature=0, use_kv_cache=False, **kw) == expected["greedy_uncached"]
    # The fixture's ids came from the removed GPT.generate: nanoGPT's loop (full forward, top-k 5, one draw a step).
    g, ids = torch.Generator().manual_seed(3), torch.tensor([[0, 1, 2]])
    with torch.no_grad():
        for _ in range(30):
            logits = lm.model(ids[:, -lm.model.config.block_size :])[0][:, -1, :]  # (1, vocab)
            logits[logits < torch.topk(logits, 5).values[:, [-1]]] = -float("inf")
            ids = torch.cat((ids, torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)), dim=1)
    assert ids[0].tolist() == expected["gpt_generate_ids_seed_3"]


def test_resuming_with_other_switches_is_refused_naming_the_key_but_an_old_checkpoint_resumes(tmp_path):
    old = torch.load(FIXTURES / "gpt2_layout_pre_issue12.ckpt", weights_only=True)
    tokenizer = char_tokenizer()
    shape = {k: v for k, v in old["hyper_parameters"]["model"].items()}  # no switch keys: GPT-2's layout
    old["global_step"] = 0
    tok = tokenizer.to_json()
    old["tokenizer"] = tok
    same = {**shape, "position": "learned", "norm": "layernorm"}
    _check_resumable(old, same, tok, {}, tmp_path / "old.ckpt")  # accepted
    with pytest.raises(CheckpointError, match=r"position: 'learned' -> 'rope'"):
        _check_resumable(old, {**shape, "position": "rope"}, tok, {}, tmp_path / "old.ckpt")
    # loading a checkpoint of one architecture describes itself: no switch needs repeating
    path = save_checkpoint(tmp_path / "modern.ckpt", tokenizer, **SWITCHES["modern"])
    assert load_model(path, device="cpu").model.config.qk_norm


def test_size_and_architecture_compose_independently(tmp_path):
    cfg = compose_train(tmp_path, ["model=tiny", "arch=modern"])
    m = cfg.model
    assert (m.n_embd, m.position, m.mlp, m.tie_embeddings) == (32, "rope", "relu2", False)
    cfg = compose_train(tmp_path, ["experiment=shakespeare_char_cpu", "arch=llama"])
    assert (cfg.model.n_embd, cfg.model.block_size, cfg.model.mlp, cfg.model.norm) == (128, 64, "swiglu", "rmsnorm")
    cfg = compose_train(tmp_path, ["experiment=shakespeare_char_cpu"])  # nanoGPT's recipe stays GPT-2's layout
    assert (cfg.model.position, cfg.model.norm, cfg.model.mlp, cfg.model.tie_embeddings) == (
        "learned", "layernorm", "gelu", True)  # fmt: skip


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["arch=llama", "model.n_embd=132", "model.n_head=12"], "model.head_dim=11"),  # RoPE needs even heads
        (["model.n_kv_head=3"], "model.n_kv_head=3"),
        (["model.n_embd=100", "model.n_head=3"], "model.n_embd=100"),
        (["model.position=absolute"], "model.position='absolute'"),
        (["model.mlp=geglu"], "model.mlp='geglu'"),
        (["model.logit_softcap=0"], "model.logit_softcap=0"),
        (["model.head_dim=0"], "model.head_dim=0"),
        (["arch=gpt2", "model.q_norm_gain=2.0"], "model.q_norm_gain=2.0"),  # an init of QK-norm's gain
    ],
)
def test_bad_combinations_fail_at_config_time_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as e:
        validate_train_config(compose_train(tmp_path, overrides))
    assert str(e.value).startswith(key), str(e.value)


def test_every_row_of_the_switch_table_benchmark_is_a_valid_training_config(tmp_path, monkeypatch):
    """bench/arch_quality.py --table trains each row's overrides on its preset: each must pass train.py's checks."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts bench/ on it; undone after the test
    spec = importlib.util.spec_from_file_location("arch_quality", REPO_ROOT / "bench" / "arch_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert len(bench.TABLE) > 10
    for name, (preset, overrides) in bench.TABLE.items():
        cfg = compose_train(tmp_path, [f"experiment={preset}", "data.path=/x/input.txt", *overrides])
        try:
            validate_train_config(cfg)
        except ConfigError as e:
            raise AssertionError(f"table row {name.strip()!r}: {e}") from None


@pytest.mark.parametrize(
    "field, value", [("rope_base", 1e308), ("rope_base", 1.0), ("norm_eps", 1e-300), ("norm_eps", 1.0)]
)
def test_extreme_rope_base_and_norm_eps_are_refused(field, value):
    # The bounds a Hugging Face config.json is held to (interop/hf_config.py); presets use 1e4..1e6 and 1e-6..1e-5.
    with pytest.raises(ValueError, match=f"^{field}={re.escape(str(value))}: must be in"):
        GPTConfig(**{**MODEL, "vocab_size": 23, field: value})
