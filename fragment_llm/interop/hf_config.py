"""Our GPTConfig and a Hugging Face `config.json`, both ways, for the three families that map one to one.

    gpt2   learned positions, LayerNorm, GELU (erf: "gelu"; tanh: "gelu_new"), tied head  GPT2LMHeadModel
    llama  RoPE, RMSNorm, SwiGLU, optional GQA / head_dim / untied head / biases        LlamaForCausalLM
    qwen3  llama plus per-head q_norm/k_norm (QK-norm), no biases                       Qwen3ForCausalLM

A config.json comes from anywhere: every field we read is type- and range-checked, a field
that changes the computation in a way we do not implement (rope scaling, sliding windows,
another activation, quantization) is refused by name, and sizes are bounded before any
tensor is allocated.
"""

from __future__ import annotations

from typing import Any

from fragment_llm.config import MAX_VOCAB_SIZE
from fragment_llm.errors import CheckpointError, ExportError
from fragment_llm.model.gpt import NORM_EPS_RANGE, ROPE_BASE_RANGE, GPTConfig

ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
GELU_NAMES = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}  # theirs -> ours
# Far beyond any model a CPU fine-tunes, small enough that a hostile file cannot make us build a huge model.
LIMITS = {"width": 1 << 16, "layers": 1024, "heads": 1024, "positions": 1 << 22, "hidden": 1 << 20}


def family_of(config: GPTConfig) -> str:
    """The Hugging Face architecture our model is exactly, or an ExportError naming the switch none has."""
    c = config
    if c.logit_softcap is not None:
        raise ExportError(
            f"model.logit_softcap={c.logit_softcap}: GPT-2, Llama and Qwen3 have no logit soft-cap, so transformers "
            "would compute other logits; train without it (logit_softcap=null) to export"
        )
    if c.smear or c.x0_skip:
        switch = "smear" if c.smear else "x0_skip"
        raise ExportError(
            f"model.{switch}=true: GPT-2, Llama and Qwen3 have no such connection; train without it to export"
        )
    if c.mlp == "relu2":
        raise ExportError("model.mlp=relu2: GPT-2, Llama and Qwen3 have no ReLU^2 MLP; train with gelu or swiglu")
    if c.position == "learned":  # GPT-2
        wrong = [
            f"model.norm={c.norm} (GPT-2 has LayerNorm)" if c.norm != "layernorm" else "",
            f"model.mlp={c.mlp} (GPT-2 has a GELU MLP)" if c.mlp not in ("gelu", "gelu_tanh") else "",
            "model.qk_norm=true (GPT-2 has no QK-norm)" if c.qk_norm else "",
            f"model.n_kv_head={c.n_kv_head} (GPT-2 has no grouped-query attention)" if c.n_kv_heads != c.n_head else "",
            f"model.head_dim={c.head_dim} (GPT-2's is n_embd / n_head)" if c.head_size * c.n_head != c.n_embd else "",
        ]
        family = "gpt2"
    else:
        wrong = [
            f"model.norm={c.norm} (Llama and Qwen3 have RMSNorm)" if c.norm != "rmsnorm" else "",
            f"model.mlp={c.mlp} (Llama and Qwen3 have a SwiGLU MLP)" if c.mlp != "swiglu" else "",
            "model.bias=true (Qwen3, the QK-norm architecture, has no MLP biases)" if c.qk_norm and c.bias else "",
        ]
        family = "qwen3" if c.qk_norm else "llama"
    wrong = [w for w in wrong if w]
    if wrong:
        raise ExportError(
            f"cannot export a model with model.position={c.position} and {'; '.join(wrong)}: no transformers "
            "architecture computes it (GPT-2: learned positions, LayerNorm, GELU; Llama: rope, RMSNorm, SwiGLU; "
            "Qwen3: Llama's with QK-norm)"
        )
    return family


def to_hf_config(config: GPTConfig, family: str, token_ids: dict[str, int | None], dtype: str) -> dict[str, Any]:
    """config.json for `family` (see family_of); token_ids: bos_token_id, eos_token_id, pad_token_id."""
    c = config
    common = {
        "architectures": [ARCHITECTURES[family]],
        "model_type": family,
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": c.tie_embeddings,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": dtype,  # transformers < 5 reads this name, 5 reads "dtype"
        "dtype": dtype,
        **token_ids,
    }
    if family == "gpt2":
        return {
            **common,
            "n_positions": c.block_size,
            "n_ctx": c.block_size,  # llama.cpp's converter reads n_ctx
            "n_embd": c.n_embd,
            "n_layer": c.n_layer,
            "n_head": c.n_head,
            "n_inner": c.hidden_size,
            "activation_function": "gelu" if c.mlp == "gelu" else "gelu_new",
            "layer_norm_epsilon": c.norm_eps,
            "resid_pdrop": c.dropout,
            "embd_pdrop": c.dropout,
            "attn_pdrop": c.dropout,
            "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False,
            "add_cross_attention": False,
        }
    llama = {
        **common,
        "hidden_size": c.n_embd,
        "intermediate_size": c.hidden_size,
        "num_hidden_layers": c.n_layer,
        "num_attention_heads": c.n_head,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_size,
        "hidden_act": "silu",
        "max_position_embeddings": c.block_size,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": c.rope_base,  # transformers < 5 and llama.cpp read rope_theta, 5 rope_parameters
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
        "attention_bias": c.bias,
        "attention_dropout": c.dropout,
    }
    if family == "llama":
        return {**llama, "mlp_bias": c.bias, "pretraining_tp": 1}
    return {
        **llama,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": c.n_layer,
        "layer_types": ["full_attention"] * c.n_layer,
    }


class _Fields:
    """Typed, bounded reads of one config.json; every failure names the file and the field."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw, self.source = raw, source

    def fail(self, key: str, why: str, value: Any = ...) -> CheckpointError:
        """`key` may be a dotted path into a nested object (`rope_parameters.rope_theta`): then give `value`."""
        value = self.raw.get(key) if value is ... else value
        return CheckpointError(f"{self.source}: {key}={str(value)[:80]}: {why}; not loaded")

    def int(self, key: str, limit: int, default: Any = ...) -> int:
        """The field, or `default` where it is absent or null (no default: the field is required)."""
        value = self.raw.get(key)
        if value is None:
            if default is ...:
                raise CheckpointError(f"{self.source}: no {key}; a {self.raw.get('model_type')} config.json needs it")
            return default
        if type(value) is not int or not 0 < value <= limit:
            raise self.fail(key, f"must be an integer in 1..{limit:,}")
        return value

    def eps(self, key: str, default: float) -> float:
        """A normalization epsilon, in NORM_EPS_RANGE (our model's bounds)."""
        value = self.raw.get(key, default)
        low, high = NORM_EPS_RANGE
        if type(value) not in (int, float) or not low <= value <= high:
            raise self.fail(key, f"must be a number in [{low:g}, {high:g}]")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if type(value) is not bool:
            raise self.fail(key, "must be true or false")
        return value

    def require(self, key: str, allowed: tuple, default: Any, why: str) -> Any:
        value = self.raw.get(key, default)
        if value not in allowed:
            raise self.fail(key, why)
        return value


def from_hf_config(raw: Any, source: str) -> tuple[str, GPTConfig]:
    """(family, GPTConfig) of a config.json; block_size is the model's full context (n_positions or
    max_position_embeddings). Anything we would not compute exactly as transformers does is refused."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: expected a JSON object; not loaded")
    f = _Fields(raw, source)
    family = raw.get("model_type")
    if family == "qwen2":
        raise f.fail("model_type", "Qwen2 has biases on q/k/v but not on the output projection, which our single "
                     "bias switch cannot express (Qwen3, GPT-2 and Llama models load)")  # fmt: skip
    if family not in ARCHITECTURES:
        raise f.fail("model_type", f"only {', '.join(ARCHITECTURES)} models are loaded")
    if raw.get("quantization_config"):  # (auto_map, custom code, is ignored as transformers ignores it by default)
        raise f.fail("quantization_config", "quantized weights are not loaded")
    common = {
        "vocab_size": f.int("vocab_size", MAX_VOCAB_SIZE),
        "dropout": 0.0,
    }
    if family == "gpt2":
        if "n_positions" not in raw and "n_ctx" in raw:  # very old configs name the context n_ctx only
            raw = {**raw, "n_positions": raw["n_ctx"]}
            f = _Fields(raw, source)
        activation = f.require("activation_function", tuple(GELU_NAMES), "gelu_new", f"not one of {list(GELU_NAMES)}")
        f.require("scale_attn_weights", (True,), True, "only the 1/sqrt(head size) attention scale is implemented")
        f.require("scale_attn_by_inverse_layer_idx", (False,), False, "per-layer attention scaling is not implemented")
        f.require("add_cross_attention", (False,), False, "cross-attention is not implemented")
        config = dict(
            block_size=f.int("n_positions", LIMITS["positions"]),
            n_layer=f.int("n_layer", LIMITS["layers"]),
            n_head=f.int("n_head", LIMITS["heads"]),
            n_embd=f.int("n_embd", LIMITS["width"]),
            bias=True,
            norm_eps=f.eps("layer_norm_epsilon", 1e-5),
            mlp=GELU_NAMES[activation],
            mlp_hidden=f.int("n_inner", LIMITS["hidden"], None),
            tie_embeddings=f.flag("tie_word_embeddings", True),
        )
    else:
        f.require("hidden_act", ("silu",), "silu", "only SwiGLU with silu is implemented")
        n_head = f.int("num_attention_heads", LIMITS["heads"])
        n_embd = f.int("hidden_size", LIMITS["width"])
        bias = f.flag("attention_bias", False)
        if family == "llama" and f.flag("mlp_bias", False) != bias:
            raise f.fail("mlp_bias", f"differs from attention_bias={bias}; our model has one bias switch for both")
        if family == "qwen3":
            if bias:
                raise f.fail("attention_bias", "Qwen3's MLP has no biases, so attention biases cannot be expressed")
            f.require("use_sliding_window", (False, None), False, "sliding-window attention is not implemented")
            if any(t != "full_attention" for t in raw.get("layer_types") or []):
                raise f.fail("layer_types", "only full_attention layers are implemented")
        if family == "llama" and raw.get("head_dim") is None and n_embd % n_head:
            raise f.fail("num_attention_heads", f"does not divide hidden_size={n_embd} and there is no head_dim")
        head_dim = f.int("head_dim", LIMITS["width"], 128 if family == "qwen3" else n_embd // n_head)
        n_kv_head = f.int("num_key_value_heads", LIMITS["heads"], 32 if family == "qwen3" else n_head)
        config = dict(
            block_size=f.int("max_position_embeddings", LIMITS["positions"]),
            n_layer=f.int("num_hidden_layers", LIMITS["layers"]),
            n_head=n_head,
            n_embd=n_embd,
            bias=bias,
            position="rope",
            rope_base=_rope_base(f),
            norm="rmsnorm",
            norm_eps=f.eps("rms_norm_eps", 1e-6),
            mlp="swiglu",
            mlp_hidden=f.int("intermediate_size", LIMITS["hidden"]),
            qk_norm=family == "qwen3",
            tie_embeddings=f.flag("tie_word_embeddings", False),
            n_kv_head=None if n_kv_head == n_head else n_kv_head,
            head_dim=None if head_dim * n_head == n_embd else head_dim,
        )
    try:
        return family, GPTConfig(**common, **config)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}; not loaded") from None


def _rope_base(f: _Fields) -> float:
    """RoPE's theta from rope_parameters (transformers 5) or rope_theta; any rotary embedding but the default
    is refused. Errors name the nested field at fault (`rope_parameters.rope_type`)."""
    for key in ("rope_parameters", "rope_scaling"):
        value = f.raw.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise f.fail(key, "must be an object (or null)")
        if nested := next((k for k, v in value.items() if isinstance(v, dict)), None):
            raise f.fail(f"{key}.{nested}", "per-layer rotary settings are not implemented", value[nested])
        # transformers 5 reads a missing rope_parameters type as the default; rope_scaling (4.x) always names one
        kind_key = "rope_type" if "rope_type" in value or "type" not in value else "type"
        kind = value.get(kind_key, "default" if key == "rope_parameters" else None)
        if kind != "default":
            raise f.fail(f"{key}.{kind_key}", "not implemented (only the default rotary embedding)", kind)
        if value.get("partial_rotary_factor", 1.0) != 1.0:
            raise f.fail(f"{key}.partial_rotary_factor", "partial rotary embeddings are not implemented",
                         value["partial_rotary_factor"])  # fmt: skip
    if f.raw.get("partial_rotary_factor", 1.0) != 1.0:
        raise f.fail("partial_rotary_factor", "partial rotary embeddings are not implemented")
    params = f.raw.get("rope_parameters")
    key, theta = "rope_theta", f.raw.get("rope_theta", 10000.0)
    if isinstance(params, dict) and "rope_theta" in params:
        key, theta = "rope_parameters.rope_theta", params["rope_theta"]
    elif isinstance(params, dict) and f.raw.get("rope_theta") is None:  # transformers falls back to rope_theta
        raise f.fail("rope_parameters.rope_theta", "missing (and no rope_theta beside it)", None)
    low, high = ROPE_BASE_RANGE
    if type(theta) not in (int, float) or not low < theta <= high:
        raise f.fail(key, f"must be a number in ({low:g}, {high:g}]", theta)
    return float(theta)
