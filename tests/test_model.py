import math

import pytest
import torch

from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.model.optimizers import warmup_cosine
from fragment_llm.training.lit_module import LitGPT

CFG = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**CFG)).eval()


def test_forward_shapes_and_initial_loss(model):
    idx, targets = torch.randint(0, 97, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 97)
    assert abs(loss.item() - math.log(97)) < 0.3  # an untrained model is close to uniform
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 97) and loss is None


def test_lm_head_is_tied_to_the_token_embedding(model):
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.num_params(non_embedding=False) == sum(p.numel() for p in model.parameters())


def test_attention_is_causal(model):
    idx = torch.randint(0, 97, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 97
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    big = GPT(GPTConfig(**{**CFG, "n_layer": 8, "n_embd": 128}))
    std = big.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.001
    assert abs(big.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


def test_bias_false_removes_every_bias():
    m = GPT(GPTConfig(**{**CFG, "bias": False}))
    assert not [n for n, _ in m.named_parameters() if n.endswith("bias")]


def test_weight_decay_applies_to_2d_weights_only(model):
    decay, no_decay = model.optimizer_param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    n = len(decay["params"]) + len(no_decay["params"])
    assert n == len(list(model.parameters()))  # the tied weight is counted once


def test_sequence_longer_than_block_size_is_refused(model):
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(**{**CFG, "n_embd": 33})


def test_warmup_then_cosine_to_min_lr():
    lr, min_lr, warm, decay = 1e-3, 1e-4, 10, 110
    assert warmup_cosine(0, lr, min_lr, warm, decay) == pytest.approx(lr / 11)
    assert warmup_cosine(9, lr, min_lr, warm, decay) == pytest.approx(lr * 10 / 11)
    assert warmup_cosine(10, lr, min_lr, warm, decay) == pytest.approx(lr)
    assert warmup_cosine(60, lr, min_lr, warm, decay) == pytest.approx((lr + min_lr) / 2)
    assert warmup_cosine(110, lr, min_lr, warm, decay) == pytest.approx(min_lr)
    assert warmup_cosine(500, lr, min_lr, warm, decay) == pytest.approx(min_lr)
    values = [warmup_cosine(s, lr, min_lr, warm, decay) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values[:-1], values[1:], strict=True))


def test_lit_module_optimizer_and_schedule():
    lit = LitGPT(
        model=CFG,
        optimizer=dict(lr=1e-3, min_lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99], warmup_steps=2, decay_steps=20),
    )
    conf = lit.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.99)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert sched["interval"] == "step"
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 / 3)
    assert sched["scheduler"].state_dict()["lr_lambdas"] == [None, None]  # nothing unpicklable in checkpoints
    assert lit.hparams["model"] == CFG and "tokenizer_json" not in lit.hparams
