"""Our state dict and a Hugging Face model's tensors, both ways: names, transposes, fused matrices.

One table of links per family (ours <-> theirs), read in either direction, so export and
import cannot disagree:
- GPT-2's Conv1D stores weights as (in, out): our (out, in) Linear weights are transposed.
  It always has biases: a model of ours without them exports zeros.
- Llama/Qwen3 keep q/k/v and gate/up apart; our c_attn is [q; k; v] and c_fc is [gate; up]
  along dim 0, so one matrix of ours is cut into several of theirs.
- Hugging Face's Llama checkpoints hold q/k already in the half-split `rotate_half` order that
  our RoPE uses, so nothing is permuted (the tests check this by comparing logits).
A tied head is stored once, as the embedding (transformers re-ties it on load).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from fragment_llm.model.gpt import GPT, GPTConfig


@dataclass(frozen=True)
class Link:
    ours: str | None  # None: theirs only, written as zeros (GPT-2's biases of a bias-free model)
    theirs: tuple[str, ...]
    split: tuple[int, ...] = ()  # rows of ours that go to each of theirs (fused matrices)
    transpose: bool = False  # GPT-2's Conv1D layout
    zeros: int = 0  # length of a zeros-only tensor


def links(config: GPTConfig, family: str) -> list[Link]:
    return _gpt2_links(config) if family == "gpt2" else _llama_links(config)


def _gpt2_links(c: GPTConfig) -> list[Link]:
    def same(name: str, transpose: bool = False) -> Link:
        return Link(name, (name,), transpose=transpose)

    def bias(name: str, rows: int) -> Link:
        return same(name) if c.bias else Link(None, (name,), zeros=rows)

    out = [same("transformer.wte.weight"), same("transformer.wpe.weight")]
    for i in range(c.n_layer):
        p = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out += [same(f"{p}{ln}.weight"), bias(f"{p}{ln}.bias", c.n_embd)]
        for name, rows in (("attn.c_attn", 3 * c.n_embd), ("attn.c_proj", c.n_embd), ("mlp.c_fc", c.hidden_size),
                           ("mlp.c_proj", c.n_embd)):  # fmt: skip
            out += [same(f"{p}{name}.weight", transpose=True), bias(f"{p}{name}.bias", rows)]
    out += [same("transformer.ln_f.weight"), bias("transformer.ln_f.bias", c.n_embd)]
    return out if c.tie_embeddings else [*out, same("lm_head.weight")]


def _llama_links(c: GPTConfig) -> list[Link]:
    q, kv, hidden = c.n_head * c.head_size, c.n_kv_heads * c.head_size, c.hidden_size
    out = [Link("transformer.wte.weight", ("model.embed_tokens.weight",))]
    for i in range(c.n_layer):
        p, t = f"transformer.h.{i}.", f"model.layers.{i}."
        out += [
            Link(f"{p}ln_1.weight", (f"{t}input_layernorm.weight",)),
            Link(f"{p}ln_2.weight", (f"{t}post_attention_layernorm.weight",)),
        ]
        for kind in ("weight", "bias") if c.bias else ("weight",):
            out += [
                Link(f"{p}attn.c_attn.{kind}", tuple(f"{t}self_attn.{x}_proj.{kind}" for x in "qkv"), (q, kv, kv)),
                Link(f"{p}attn.c_proj.{kind}", (f"{t}self_attn.o_proj.{kind}",)),
                Link(f"{p}mlp.c_fc.{kind}", (f"{t}mlp.gate_proj.{kind}", f"{t}mlp.up_proj.{kind}"), (hidden, hidden)),
                Link(f"{p}mlp.c_proj.{kind}", (f"{t}mlp.down_proj.{kind}",)),
            ]
        if c.qk_norm:
            out += [Link(f"{p}attn.{x}_norm.weight", (f"{t}self_attn.{x}_norm.weight",)) for x in "qk"]
    out.append(Link("transformer.ln_f.weight", ("model.norm.weight",)))
    return out if c.tie_embeddings else [*out, Link("lm_head.weight", ("lm_head.weight",))]


def to_hf(state: Mapping[str, torch.Tensor], config: GPTConfig, family: str) -> dict[str, torch.Tensor]:
    """The tensors of the Hugging Face model `family` (see hf_config.family_of) with our weights."""
    ref = state["transformer.wte.weight"]
    out: dict[str, torch.Tensor] = {}
    for link in links(config, family):
        if link.ours is None:
            out[link.theirs[0]] = torch.zeros(link.zeros, dtype=ref.dtype, device=ref.device)
            continue
        t = state[link.ours].t() if link.transpose else state[link.ours]
        for name, part in zip(link.theirs, t.split(link.split) if link.split else (t,), strict=True):
            out[name] = part.contiguous()  # safetensors stores each tensor whole, never a view of another
    return out


def from_hf(read: Callable[[str], torch.Tensor], config: GPTConfig, family: str) -> dict[str, torch.Tensor]:
    """Our state dict from the tensors of a Hugging Face model, each fetched once with `read(name)`.

    A learned position table keeps its first config.block_size rows (a context shorter than theirs).
    """
    state: dict[str, torch.Tensor] = {}
    for link in links(config, family):
        if link.ours is None:
            continue
        parts = [read(name) for name in link.theirs]
        t = torch.cat(parts) if len(parts) > 1 else parts[0]
        state[link.ours] = t.t().contiguous() if link.transpose else t
    if "transformer.wpe.weight" in state:
        state["transformer.wpe.weight"] = state["transformer.wpe.weight"][: config.block_size]
    if config.tie_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]  # the same tensor, as in our model
    return state


def hf_shapes(config: GPTConfig, family: str) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face checkpoint of this model holds, and its shape; nothing is allocated."""
    with torch.device("meta"):
        model = GPT(config)
    return {name: tuple(t.shape) for name, t in to_hf(model.state_dict(), config, family).items()}


def canonical_name(name: str, family: str) -> str:
    """A checkpoint's tensor name as a *ForCausalLM saves it (a bare GPT2Model/LlamaModel has no prefix)."""
    prefix = "transformer." if family == "gpt2" else "model."
    return name if name.startswith(prefix) or name == "lm_head.weight" else prefix + name


def ignorable(name: str, family: str) -> bool:
    """Buffers older transformers versions saved alongside the weights: not parameters, never read."""
    if family == "gpt2":
        return name.endswith((".attn.bias", ".attn.masked_bias"))
    return name.endswith(".rotary_emb.inv_freq")
