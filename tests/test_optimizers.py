"""Muon with AdamW: who gets which parameters, the update itself, state round trips, schedules, config checks."""

from __future__ import annotations

import copy
import dataclasses
import io
import re

import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz

from fragment_llm.errors import CheckpointError, ConfigError
from fragment_llm.interop.hf_config import family_of
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.model.muon import NS_COEFFICIENTS, MuonWithAdamW, orthogonalize, orthogonalize_stacks, unit_ball_scale
from fragment_llm.model.optimizers import build_optimizer, momentum_warmup, warmup_stable_decay
from fragment_llm.training.config_checks import validate_train_config
from tests.conftest import compose_train

MODEL = dict(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)
MUON = dict(name="muon", lr=0.02, min_lr=0.0, weight_decay=0.0, betas=[0.8, 0.95], warmup_steps=2, schedule="wsd",
            decay_fraction=0.5, adam_lr=0.01, head_lr=0.005, momentum=0.95, momentum_warmup_start=0.85,
            momentum_warmup_steps=4, ns_steps=5)  # fmt: skip


def model(**switches) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**MODEL, **switches}))


def train_steps(gpt: GPT, opt: torch.optim.Optimizer, sched, steps: int, seed: int = 0) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, 23, (4, 17), generator=g)
        _, loss = gpt(idx[:, :-1], idx[:, 1:].contiguous())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("tied", [True, False])
def test_every_parameter_is_in_exactly_one_group_and_muon_gets_the_hidden_matrices_only(tied):
    gpt = model(tie_embeddings=tied, qk_norm=True)
    opt, _ = build_optimizer(gpt, MUON, 20)
    seen = [p for g in opt.param_groups for p in g["params"]]
    assert len(seen) == len({id(p) for p in seen}) == len(list(gpt.parameters()))  # each exactly once
    muon = {n for g in opt.param_groups if g["kind"] == "muon" for n in g["param_names"]}
    matrices = ("c_attn.weight", "c_proj.weight", "c_fc.weight")
    assert muon == {n for n, _ in gpt.named_parameters() if n.endswith(matrices)}
    assert "transformer.wte.weight" not in muon and "lm_head.weight" not in muon  # Muon would take them silently
    lrs = {n: g["lr"] for g in opt.param_groups for n in g["param_names"]}
    third = pytest.approx(1 / 3)  # the first warmup step's factor
    assert lrs["transformer.wte.weight"] / 0.01 == third and lrs["transformer.ln_f.weight"] / 0.01 == third
    assert lrs.get("lm_head.weight", 0.005 / 3) / 0.005 == third
    assert lrs["transformer.h.0.mlp.c_fc.weight"] / 0.02 == third
    assert opt.adamw.param_groups == [g for g in opt.param_groups if g["kind"] == "adamw"]


ADAMW = dict(name="adamw", lr=1e-3, min_lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99], warmup_steps=2)


def test_adamw_is_fused_on_cpu_and_matches_foreach_up_to_rounding():
    fused_model, foreach_model = model(), model()
    fused, sched = build_optimizer(fused_model, ADAMW, 20)
    assert fused.defaults["fused"] is True  # one kernel per step instead of ~10 foreach ops (the CPU recipe: 5x)
    muon, _ = build_optimizer(model(), MUON, 20)
    assert muon.adamw.defaults["fused"] is True
    groups = foreach_model.optimizer_param_groups(ADAMW["weight_decay"])
    foreach = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=tuple(ADAMW["betas"]), foreach=True)
    foreach_sched = type(sched)(foreach, sched.lr_lambdas[0])
    a = train_steps(fused_model, fused, sched, 5)
    b = train_steps(foreach_model, foreach, foreach_sched, 5)
    assert a == pytest.approx(b, rel=1e-5)
    for p, q in zip(fused_model.parameters(), foreach_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)  # updates are ~1e-3


def test_newton_schulz_in_float32_is_torchs_iteration():
    torch.manual_seed(0)
    for shape in [(96, 32), (32, 32), (32, 128)]:
        g = torch.randn(shape)
        ours, torchs = orthogonalize(g, 5), _zeropower_via_newtonschulz(g, NS_COEFFICIENTS, 5, 1e-7).float()
        assert ours.shape == shape
        torch.testing.assert_close(ours, torchs, atol=0.03, rtol=0.05)  # torch's runs in bfloat16
        s = torch.linalg.svdvals(ours)
        assert 0.6 < s.min() and s.max() < 1.3  # close to semi-orthogonal (Keller's quintic: S in ~(0.7, 1.2))


def test_the_gram_space_iteration_equals_the_direct_one():
    """Wide matrices iterate on x x^T; the result must be the direct iteration's (computed in float64)."""
    a, b, c = NS_COEFFICIENTS
    torch.manual_seed(0)
    for shape in [(32, 96), (128, 32)]:
        g = torch.randn(shape, dtype=torch.float64)
        x = g.T if shape[0] > shape[1] else g
        x = x / x.norm()
        for _ in range(5):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        direct = x.T if shape[0] > shape[1] else x
        torch.testing.assert_close(orthogonalize(g, 5), direct, atol=2e-6, rtol=0)  # float32 rounding


def test_a_muon_step_matches_torch_optim_muon():
    torch.manual_seed(0)
    w = torch.randn(96, 32, requires_grad=True)
    w2 = w.detach().clone().requires_grad_(True)
    bias = torch.zeros(3, requires_grad=True)  # AdamW's part, untouched here
    ours = MuonWithAdamW([{"params": [w]}], [{"params": [bias]}], lr=0.02, momentum=0.9, weight_decay=0.1)
    torchs = torch.optim.Muon([w2], lr=0.02, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        grad = torch.randn(96, 32)
        w.grad, w2.grad = grad.clone(), grad.clone()
        ours.step()
        torchs.step()
    torch.testing.assert_close(w, w2, atol=2e-3, rtol=0)


def test_neuron_norm_equalizes_the_rows_of_the_update_and_keeps_its_size():
    """NorMuon: each output neuron's (row's) share of the orthogonalized update is divided by the root of its
    running mean square, and the update keeps Muon's Frobenius norm (so optimizer.lr means the same)."""
    torch.manual_seed(0)
    w = torch.randn(96, 32)
    grad = torch.randn(96, 32) * torch.linspace(0.1, 3.0, 96)[:, None]  # rows of very different scales
    steps = {}
    for neuron_norm in (False, True):
        p = w.clone().requires_grad_(True)
        bias = torch.zeros(3, requires_grad=True)  # AdamW's part, untouched here
        opt = MuonWithAdamW([{"params": [p]}], [{"params": [bias]}], lr=0.02, momentum=0.0, nesterov=False,
                            neuron_norm=neuron_norm)  # fmt: skip
        p.grad = grad.clone()
        opt.step()
        steps[neuron_norm] = (p - w).detach()
    plain, normed = steps[False], steps[True]
    torch.testing.assert_close(normed.norm(), plain.norm(), rtol=1e-5, atol=0)
    row_rms = normed.square().mean(dim=1)
    assert row_rms.max() / row_rms.min() < 1.001  # one step in: every row's moment is its own mean square
    assert plain.square().mean(dim=1).max() / plain.square().mean(dim=1).min() > 1.1


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_steps_follow_the_algorithm_written_out(nesterov):
    """(Nesterov) momentum, Newton-Schulz, torch's lr adjustment, weight decay and NorMuon's running per-row
    normalization (the optimizer finds the kept norm from the rows' mean squares), over steps where the moments
    differ from the current rows, for tall, square and wide matrices stepped together."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(48, 16), (48, 16), (16, 16), (16, 40)]
    weights = [torch.randn(shape, generator=gen) for shape in shapes]
    params = [w.clone().requires_grad_(True) for w in weights]
    bias = torch.zeros(3, requires_grad=True)  # AdamW's part, untouched here
    lr, momentum, wd = 0.02, 0.9, 0.1
    opt = MuonWithAdamW([{"params": params}], [{"params": [bias]}], lr=lr, momentum=momentum, weight_decay=wd,
                        nesterov=nesterov, ns_steps=3, ns_precondition="aol", neuron_norm=True)  # fmt: skip
    bufs = [torch.zeros_like(w) for w in weights]
    moments = [torch.zeros(w.size(0), 1) for w in weights]
    for _ in range(3):
        grads = [torch.randn(w.shape, generator=gen) * torch.rand(w.size(0), 1, generator=gen) for w in weights]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
            bufs[i] = bufs[i] * momentum + g * (1 - momentum)
            ortho = orthogonalize(g + momentum * (bufs[i] - g) if nesterov else bufs[i], 3, "aol")
            moments[i] = 0.95 * moments[i] + 0.05 * ortho.square().mean(dim=1, keepdim=True)
            normed = ortho / (moments[i].sqrt() + 1e-8)
            update = normed * ortho.norm() / normed.norm()
            weights[i] = w * (1 - lr * wd) - lr * max(1.0, w.size(0) / w.size(1)) ** 0.5 * update
    for p, w in zip(params, weights, strict=True):
        torch.testing.assert_close(p.detach(), w, atol=1e-5, rtol=1e-5)


def test_muon_state_is_one_stack_per_shape_that_steps_reuse_and_reloads_rebuild():
    """The momentum buffers (and NorMuon's moments) of same-shape matrices are slices of one stack, so no step
    copies them into one: kept from step to step, saved once, rebuilt from a loaded state or a replaced entry."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 16), (64, 16), (16, 64)]
    matrices = [torch.randn(s) for s in shapes]

    def muon() -> MuonWithAdamW:
        mine = [m.clone().requires_grad_(True) for m in matrices]
        return MuonWithAdamW([{"params": mine}], [{"params": [torch.zeros(2)]}], lr=0.02, neuron_norm=True)

    opt, twin = muon(), muon()  # the twin steps alike without the reload

    def params(o: MuonWithAdamW) -> list[torch.Tensor]:
        return o.param_groups[0]["params"]

    def step(*opts: MuonWithAdamW) -> None:  # the same gradients for each optimizer's own parameters
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for o in opts:
            for p, g in zip(params(o), grads, strict=True):
                p.grad = g.clone()
            o.step()

    def storages(o: MuonWithAdamW, key: str) -> list[int]:
        return [o.state[p][key].untyped_storage().data_ptr() for p in params(o)]

    step(opt, twin)
    momentum, moments = storages(opt, "momentum_buffer"), storages(opt, "neuron_second_moment")
    assert momentum[0] == momentum[1] != momentum[2] and moments[0] == moments[1] != moments[2]
    step(opt, twin)
    step(opt, twin)
    assert storages(opt, "momentum_buffer") == momentum and storages(opt, "neuron_second_moment") == moments

    saved, apart = io.BytesIO(), io.BytesIO()
    torch.save(opt.state_dict(), saved)
    state = opt.state_dict()
    state["state"] = {i: {k: t.clone() for k, t in entries.items()} for i, entries in state["state"].items()}
    torch.save(state, apart)
    assert saved.tell() <= apart.tell() + 1024  # a stack is saved once, not once per slice
    saved.seek(0)
    opt.load_state_dict(torch.load(saved, weights_only=True))
    step(opt, twin)
    assert storages(opt, "momentum_buffer")[0] == storages(opt, "momentum_buffer")[1]  # stacked again
    for p, q in zip(params(opt), params(twin), strict=True):
        assert torch.equal(p, q) and torch.equal(opt.state[p]["momentum_buffer"], twin.state[q]["momentum_buffer"])

    first, second = params(opt)[:2]
    opt.state[first]["momentum_buffer"] = torch.zeros(64, 16)  # replaced (as a move to a device would)
    kept = opt.state[second]["momentum_buffer"].clone()
    step(opt)
    assert torch.equal(opt.state[first]["momentum_buffer"], torch.zeros(64, 16).lerp(first.grad, 0.05))
    assert torch.equal(opt.state[second]["momentum_buffer"], kept.lerp(second.grad, 0.05))


def _stepped_muon() -> MuonWithAdamW:
    w, bias = torch.randn(8, 4, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = MuonWithAdamW([{"params": [w]}], [{"params": [bias]}], lr=0.02, neuron_norm=True)
    w.grad, bias.grad = torch.randn(8, 4), torch.randn(3)
    opt.step()
    return opt


CRAFTED_STATES = {  # what a hostile checkpoint changes -> the field the refusal names
    "param_groups[0].kind": lambda s: s["param_groups"][0].update(kind="adamw"),
    "param_groups[0].lr": lambda s: s["param_groups"][0].update(lr=float("nan")),
    "param_groups[0].nesterov": lambda s: s["param_groups"][0].pop("nesterov"),
    "param_groups[1].betas": lambda s: s["param_groups"][1].update(betas=(float("nan"), 2.0)),
    "state[0].neuron_second_moment": lambda s: s["state"][0].update(
        neuron_second_moment=torch.zeros(1, dtype=torch.float64).expand(10**8, 1)  # a huge broadcast view
    ),
    "state[0].momentum_buffer": lambda s: s["state"][0].update(momentum_buffer=torch.full((8, 4), float("inf"))),
}


@pytest.mark.parametrize("field", CRAFTED_STATES)
def test_a_crafted_optimizer_state_is_refused_by_name_before_torch_restores_it(field):
    saved = copy.deepcopy(_stepped_muon().state_dict())
    CRAFTED_STATES[field](saved)
    fresh = _stepped_muon()
    with pytest.raises(CheckpointError, match=re.escape(field)):
        fresh.load_state_dict(saved)
    fresh.load_state_dict(_stepped_muon().state_dict())  # an honest state still loads


@pytest.mark.parametrize("precondition", ["frobenius", "aol"])
@pytest.mark.parametrize("shape", [(24, 32), (96, 32), (32, 96), (32, 32)])
def test_a_batch_of_matrices_is_orthogonalized_as_each_one_alone(shape, precondition):
    gs = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    batched = orthogonalize(gs, 5, precondition)
    for g, o in zip(gs, batched, strict=True):
        torch.testing.assert_close(o, orthogonalize(g, 5, precondition), atol=2e-6, rtol=0)


@pytest.mark.parametrize("precondition", ["frobenius", "aol"])
def test_stacks_of_several_shapes_are_orthogonalized_as_each_stack_alone(precondition):
    """The optimizer hands all its shapes over at once; stacks sharing a Gram size iterate as one batch."""
    g = torch.Generator().manual_seed(2)
    shapes = [(96, 32), (32, 32), (32, 128), (128, 32), (24, 80)]  # Gram sizes 32, 32 (direct), 32, 32, 24
    stacks = [torch.randn(k, *shape, generator=g) for k, shape in zip((3, 2, 1, 2, 2), shapes, strict=True)]
    together = orthogonalize_stacks(stacks, 3, precondition)
    for stack, ortho in zip(stacks, together, strict=True):
        assert ortho.shape == stack.shape
        torch.testing.assert_close(ortho, orthogonalize(stack, 3, precondition), atol=2e-6, rtol=0)


def decaying_spectrum(k: int, m: int, n: int) -> torch.Tensor:
    """k matrices m x n with random singular vectors and singular values falling from 1 to 1e-3."""
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(k, m, m, generator=g))[0]
    v = torch.linalg.qr(torch.randn(k, n, n, generator=g))[0]
    s = torch.logspace(0, -3, min(m, n))
    return (u[:, :, : s.numel()] * s) @ v[:, : s.numel(), :]


@pytest.mark.parametrize("precondition", ["frobenius", "aol"])
def test_preconditioning_bounds_the_spectral_norm_by_one(precondition):
    x = decaying_spectrum(3, 32, 96) * 50
    scaled = x * unit_ball_scale(x @ x.mT, precondition, 1e-7)
    assert torch.linalg.matrix_norm(scaled, ord=2).max() <= 1 + 1e-5


@pytest.mark.parametrize("shape", [(32, 32), (32, 96), (128, 32)])
def test_aol_preconditioning_leaves_less_for_the_iterations_to_do(shape):
    """Row scaling starts the small singular values nearer 1 than the Frobenius norm does, so the same
    iterations bring more of them into Muon's band (here ~half an iteration's worth: Turbo-Muon drops one)."""
    g = decaying_spectrum(2, *shape)

    def singular_values(steps: int, precondition: str) -> torch.Tensor:
        return torch.linalg.svdvals(orthogonalize(g, steps, precondition))

    aol, frobenius = singular_values(4, "aol"), singular_values(4, "frobenius")
    assert (aol > 0.5).float().mean() > (frobenius > 0.5).float().mean() + 0.05
    assert aol.min() > 1.5 * frobenius.min()
    assert aol.max() < 1.3  # Keller's quintic overshoots to ~1.2, after either preconditioning


def test_muon_refuses_anything_but_a_matrix():
    with pytest.raises(ValueError, match="2-D"):
        MuonWithAdamW([{"params": [torch.zeros(3, requires_grad=True)]}], [{"params": [torch.zeros(2)]}], lr=0.02)


def test_state_dict_round_trips_exactly():
    """Half a run, a save and a load into a fresh model and optimizer, then the rest: identical to one run."""
    a = model(tie_embeddings=False)
    opt, sched = build_optimizer(a, MUON, 20)
    train_steps(a, opt, sched, 6)
    saved = {k: v.clone() for k, v in a.state_dict().items()}
    opt_state, sched_state = copy.deepcopy(opt.state_dict()), sched.state_dict()  # the live tensors move on
    rest = train_steps(a, opt, sched, 6, seed=1)

    b = model(tie_embeddings=False)
    b.load_state_dict(saved)
    opt_b, sched_b = build_optimizer(b, MUON, 20)
    opt_b.load_state_dict(opt_state)
    sched_b.load_state_dict(sched_state)
    assert train_steps(b, opt_b, sched_b, 6, seed=1) == rest
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in saved)
    assert opt_b.adamw.state is opt_b.state and opt_b.adamw.param_groups[0] is opt_b.param_groups[1]
    assert "momentum_at" not in sched_state  # functions never go into a checkpoint


def test_schedules_and_momentum_warmup():
    lrs = [warmup_stable_decay(s, 1.0, 0.0, 10, 110, 0.5) for s in range(120)]
    assert lrs[0] == pytest.approx(1 / 11) and lrs[10:55] == [1.0] * 45  # flat until the last half (step 55)
    assert lrs[55] == 1.0 and lrs[82] == pytest.approx(1 - 27 / 55) and lrs[110:] == [0.0] * 10
    assert momentum_warmup(0, 0.85, 0.95, 300) == 0.85 and momentum_warmup(150, 0.85, 0.95, 300) == pytest.approx(0.9)
    assert momentum_warmup(1000, 0.85, 0.95, 300) == 0.95 and momentum_warmup(0, 0.85, 0.95, 0) == 0.95
    gpt = model()
    opt, sched = build_optimizer(gpt, MUON, 20)
    momenta = []
    for _ in range(6):
        momenta.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert momenta == pytest.approx([0.85, 0.875, 0.9, 0.925, 0.95, 0.95])
    assert opt.param_groups[1]["betas"] == (0.8, 0.95) and "momentum" not in opt.param_groups[1]


def test_muon_and_modern_architecture_learn_faster_than_adamw_here():
    """A sanity check of the whole path on a toy task, not a benchmark: both learn; the loss falls."""
    gpt = model(position="rope", norm="rmsnorm", mlp="relu2", tie_embeddings=False, zero_init_proj=True)
    opt, sched = build_optimizer(gpt, {**MUON, "warmup_steps": 0}, 40)
    data = torch.arange(300) * 5 % 23
    losses = []
    for step in range(40):
        starts = torch.randint(0, 300 - 17, (8,), generator=torch.Generator().manual_seed(step))
        rows = data[starts[:, None] + torch.arange(17)]
        _, loss = gpt(rows[:, :-1], rows[:, 1:].contiguous())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer.name=sgd", "optimizer.name"),
        ("optimizer.schedule=linear", "optimizer.schedule"),
        ("optimizer.decay_fraction=1.5", "optimizer.decay_fraction"),
        ("optimizer.momentum=1.0", "optimizer.momentum"),
        ("optimizer.head_lr=-1", "optimizer.head_lr"),
        ("optimizer.ns_steps=0", "optimizer.ns_steps"),
        ("optimizer.ns_precondition=newton", "optimizer.ns_precondition"),
    ],
)
def test_bad_optimizer_settings_fail_naming_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_train_config(compose_train(tmp_path, ["optimizer=muon", override]))


def test_optimizer_presets_compose(tmp_path):
    cfg = compose_train(tmp_path, ["optimizer=muon"])
    assert (cfg.optimizer.name, cfg.optimizer.schedule, cfg.optimizer.lr) == ("muon", "wsd", 0.02)
    assert compose_train(tmp_path, []).optimizer.name == "muon"  # the default run's
    assert compose_train(tmp_path, ["optimizer=adamw"]).optimizer.name == "adamw"


def test_default_run_trains_qwen3_switches_with_muon_and_nanogpt_presets_keep_their_recipe(tmp_path):
    default = compose_train(tmp_path, [])
    switches = ("position", "norm", "mlp", "qk_norm", "tie_embeddings", "logit_softcap", "zero_init_proj")
    assert tuple(default.model[k] for k in switches) == ("rope", "rmsnorm", "swiglu", True, False, None, True)
    assert default.optimizer.name == "muon"
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    config = GPTConfig(vocab_size=64, **{k: v for k, v in default.model.items() if k in known})
    assert family_of(config) == "qwen3"  # the default run's model exports to transformers
    for preset in ("shakespeare_char_cpu", "shakespeare_char", "gpt2_small"):  # nanoGPT's recipes stay theirs
        cfg = compose_train(tmp_path, [f"experiment={preset}"])
        assert (cfg.optimizer.name, cfg.model.position, cfg.model.mlp, cfg.model.tie_embeddings) == (
            "adamw",
            "learned",
            "gelu",
            True,
        ), preset
    assert compose_train(tmp_path, ["experiment=finetune", "init_from=x"]).optimizer.name == "adamw"


def test_fsdp_trains_with_adamw_and_refuses_muon_at_config_time(tmp_path):
    assert compose_train(tmp_path, ["trainer=fsdp"]).optimizer.name == "adamw"
    with pytest.raises(ConfigError, match=r"optimizer\.name='muon'.*FSDP.*optimizer=adamw"):
        validate_train_config(compose_train(tmp_path, ["trainer=fsdp", "optimizer=muon"]))
