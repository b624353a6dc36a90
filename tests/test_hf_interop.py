"""Our GPT and Hugging Face's GPT-2 / Llama / Qwen3, both ways, weights only; and hostile model directories."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from fragment_llm.errors import CheckpointError, ExportError
from fragment_llm.interop.hf_config import family_of, to_hf_config
from fragment_llm.interop.hf_dir import HFModelDir
from fragment_llm.interop.hf_weights import to_hf
from fragment_llm.model.gpt import GPT, GPTConfig
from tests.hf_helpers import hf_model, rewrite_header, save_hf_model

transformers = pytest.importorskip("transformers")

VOCAB = 50
IDS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(0))


def hf_logits(path: Path, ids: torch.Tensor = IDS, **kwargs) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs).eval()
    with torch.no_grad():
        return model(ids).logits.float()


def our_logits(model: GPT, ids: torch.Tensor = IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(ids, ids)[0]


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_imported_model_gives_transformers_logits(tmp_path, family):
    save_hf_model(family, tmp_path, VOCAB)
    pretrained = HFModelDir.open(tmp_path)
    assert pretrained.family == family
    ours = pretrained.load_model()
    theirs = hf_logits(tmp_path)
    assert theirs.abs().max() > 1.0  # logits far from zero: the comparison means something
    torch.testing.assert_close(our_logits(ours), theirs, atol=1e-4, rtol=1e-4)


def test_import_reads_the_switches_of_each_family(tmp_path):
    configs = {}
    for family in ("gpt2", "llama", "qwen3"):
        save_hf_model(family, tmp_path / family, VOCAB)
        configs[family] = HFModelDir.open(tmp_path / family).config
    assert configs["gpt2"].mlp == "gelu_tanh" and configs["gpt2"].position == "learned" and configs["gpt2"].bias
    assert configs["llama"].n_kv_heads == 2 and not configs["llama"].tie_embeddings
    assert configs["llama"].rope_base == 500.0 and configs["llama"].norm_eps == 1e-5
    assert configs["qwen3"].qk_norm and configs["qwen3"].head_size == 16 and configs["qwen3"].n_embd == 32
    assert configs["qwen3"].tie_embeddings and configs["qwen3"].rope_base == 20000.0


def test_sharded_bf16_checkpoint_is_upcast_and_matches(tmp_path):
    hf_model("llama", VOCAB).to(torch.bfloat16).save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    ours = HFModelDir.open(tmp_path).load_model()
    assert ours.lm_head.weight.dtype == torch.float32
    torch.testing.assert_close(our_logits(ours), hf_logits(tmp_path, dtype=torch.float32), atol=1e-4, rtol=1e-4)


def a_gpt(**switches) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=4, n_embd=32, **switches)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def write_weights_only(model: GPT, path: Path) -> None:
    family = family_of(model.config)
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(to_hf_config(model.config, family, ids, "float32")))
    from safetensors.torch import save_file

    save_file(to_hf(model.state_dict(), model.config, family), str(path / "model.safetensors"))


LLAMA = dict(position="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=False)
EXPORTABLE = {
    "GPT2LMHeadModel": dict(bias=False),  # biases written as zeros
    "GPT2LMHeadModel/untied": dict(mlp="gelu_tanh", tie_embeddings=False),
    "LlamaForCausalLM": dict(**LLAMA, bias=True, n_kv_head=2, rope_base=500.0),
    "LlamaForCausalLM/tied": dict(**{**LLAMA, "tie_embeddings": True}, head_dim=16, mlp_hidden=48),
    "Qwen3ForCausalLM": dict(**LLAMA, bias=False, qk_norm=True, head_dim=16, n_kv_head=1, norm_eps=1e-6),
}


@pytest.mark.parametrize("name", EXPORTABLE)
def test_exported_weights_give_our_logits_in_transformers_and_back(tmp_path, name):
    model = a_gpt(**EXPORTABLE[name])
    write_weights_only(model, tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded).__name__ == name.split("/")[0]
    torch.testing.assert_close(hf_logits(tmp_path), our_logits(model), atol=1e-4, rtol=1e-4)
    back = HFModelDir.open(tmp_path).load_model()
    torch.testing.assert_close(our_logits(back), our_logits(model), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "switches, named",
    [
        (dict(mlp="relu2"), "mlp=relu2"),
        (dict(logit_softcap=30.0), "logit_softcap"),
        (dict(smear=True), "smear"),
        (dict(x0_skip=True), "x0_skip"),
        (dict(position="rope", norm="layernorm", mlp="swiglu"), "norm=layernorm"),
        (dict(norm="rmsnorm"), "norm=rmsnorm"),
        (dict(qk_norm=True), "qk_norm"),
        (dict(n_kv_head=2), "n_kv_head"),
        (dict(**LLAMA, qk_norm=True, bias=True), "bias=true"),
    ],
)
def test_export_refuses_a_switch_no_architecture_has(switches, named):
    with pytest.raises(ExportError, match=named):
        family_of(a_gpt(**switches).config)


def test_zero_init_is_not_a_refusal():
    assert family_of(a_gpt(zero_init_proj=True).config) == "gpt2"


# --- hostile model directories ----------------------------------------------------------------------


def edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "family, changes, named",
    [
        ("llama", dict(num_hidden_layers=10**9), "num_hidden_layers"),
        ("llama", dict(hidden_size=2**40), "hidden_size"),
        ("gpt2", dict(vocab_size=-3), "vocab_size"),
        ("gpt2", dict(n_embd="32"), "n_embd"),
        ("llama", dict(model_type="mistral"), "model_type"),
        ("llama", dict(model_type="qwen2"), "Qwen2"),
        ("llama", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}), "llama3"),
        ("llama", dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
        ("llama", dict(hidden_act="gelu"), "hidden_act"),
        ("qwen3", dict(use_sliding_window=True), "use_sliding_window"),
        ("gpt2", dict(activation_function="relu"), "activation_function"),
        ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
        ("llama", dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    ],
)
def test_config_we_cannot_compute_faithfully_is_refused_by_field(tmp_path, family, changes, named):
    save_hf_model(family, tmp_path, VOCAB)
    edit_config(tmp_path, **changes)
    with pytest.raises(CheckpointError, match=named) as e:
        HFModelDir.open(tmp_path)
    assert "config.json" in str(e.value)


def test_header_that_lies_about_a_shape_is_refused_before_building(tmp_path):
    save_hf_model("llama", tmp_path, VOCAB)
    name = "model.layers.0.self_attn.k_proj.weight"  # (16, 32): claim (32, 16), the same bytes

    rewrite_header(tmp_path / "model.safetensors", lambda h: h[name].update(shape=[32, 16]))
    with pytest.raises(CheckpointError, match=f"{name} has shape \\[32, 16\\]"):
        HFModelDir.open(tmp_path)


def test_header_whose_shapes_disagree_with_its_bytes_is_refused(tmp_path):
    save_hf_model("gpt2", tmp_path, VOCAB)
    rewrite_header(tmp_path / "model.safetensors", lambda h: h["transformer.wte.weight"].update(shape=[VOCAB, 64]))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        HFModelDir.open(tmp_path)


@pytest.mark.parametrize("problem", ["missing", "unexpected", "quantized"])
def test_missing_unexpected_or_quantized_tensors_are_refused(tmp_path, problem):
    from safetensors.torch import load_file, save_file

    save_hf_model("qwen3", tmp_path, VOCAB)
    tensors = load_file(tmp_path / "model.safetensors")
    if problem == "missing":
        del tensors["model.layers.1.self_attn.q_norm.weight"]
    elif problem == "unexpected":
        tensors["model.layers.0.mlp.extra.weight"] = torch.zeros(2)
    else:
        tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.int8)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match={"missing": "q_norm", "unexpected": "extra", "quantized": "I8"}[problem]):
        HFModelDir.open(tmp_path)


def test_index_naming_a_file_outside_the_directory_is_refused(tmp_path):
    save_hf_model("llama", tmp_path / "model", VOCAB, max_shard_size="20KB")
    index = tmp_path / "model" / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    name = next(iter(data["weight_map"]))
    data["weight_map"][name] = "../elsewhere.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="not a safetensors file name in this directory"):
        HFModelDir.open(tmp_path / "model")


class Payload:
    """Unpickling this runs code: it would write the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_pickled_weights_are_never_opened(tmp_path):
    from fragment_llm.inference.loading import resolve_checkpoint

    model_dir, marker = tmp_path / "model", tmp_path / "ran.txt"
    save_hf_model("gpt2", model_dir, VOCAB)
    (model_dir / "model.safetensors").unlink()
    with open(model_dir / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="pytorch_model.bin") as e:
        HFModelDir.open(resolve_checkpoint(model_dir))
    assert "never opened" in str(e.value)
    assert not marker.exists()
