"""GPT language model in plain PyTorch (no training framework imports).

Pre-norm transformer blocks with a combined QKV projection, causal scaled-dot-product
attention and an MLP. The defaults are GPT-2's layout (learned positions, LayerNorm, GELU,
an `lm_head` tied to the token embedding); typed switches in GPTConfig choose the parts
later models use, each defined as the Hugging Face architecture defines it, so a model
made of switches Llama or Qwen3 have maps onto theirs one to one:

    position  learned | rope      RoPE in the half-split `rotate_half` convention, on q and k
    norm      layernorm | rmsnorm RMSNorm with a gain, computed in float32 (LlamaRMSNorm)
    mlp       gelu | gelu_tanh | swiglu | relu2   SwiGLU = c_proj(silu(gate(x)) * up(x)), `c_fc` holds [gate; up]
    qk_norm   per-head RMSNorm on q and k before RoPE (Qwen3's q_norm/k_norm)
    n_kv_head grouped-query attention: c_attn gives [q; k; v] with n_kv_head key/value heads

Two switches no Hugging Face architecture has (modded-nanogpt's; such a model does not export):
    smear     x_t += g * x_(t-1) on the token embeddings, g learned per channel from 0
    x0_skip   each block after the first adds l_i * (the embeddings) to its input, l_i learned from 0

Names follow GPT-2 (`wte`, `wpe`, `c_attn`, `c_proj`, `c_fc`, `lm_head`) so the layout reads
like nanoGPT and weights map one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn as nn
from torch.nn import functional as F

Position = Literal["learned", "rope"]
Norm = Literal["layernorm", "rmsnorm"]
Mlp = Literal["gelu", "gelu_tanh", "swiglu", "relu2"]
# Beyond these a config is a mistake or hostile: theta 1e308 overflows float32, an eps of 1e-300 is zero (or
# denormal) in float32 and so no guard against dividing by ~0, one above 0.1 swamps what it normalizes.
ROPE_BASE_RANGE = (1.0, 1e9)  # exclusive, inclusive (published models use 1e4..5e6)
NORM_EPS_RANGE = (1e-12, 0.1)  # inclusive


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # bias in Linear and LayerNorm layers, as GPT-2; False is a little faster
    position: Position = "learned"  # learned: a wpe table (GPT-2); rope: rotary positions, no wpe
    rope_base: float = 10000.0
    norm: Norm = "layernorm"  # rmsnorm has a gain and never a bias
    norm_eps: float = 1e-5
    mlp: Mlp = "gelu"  # gelu: exact erf GELU; gelu_tanh: its tanh approximation (OpenAI's GPT-2); swiglu; relu2
    mlp_hidden: int | None = None  # None: 4 * n_embd; swiglu: the multiple of 64 nearest 8/3 * n_embd
    qk_norm: bool = False
    tie_embeddings: bool = True  # lm_head shares wte's weight
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap)
    zero_init_proj: bool = False  # zero-init every c_proj and an untied lm_head (modded-nanogpt)
    q_norm_gain: float = 1.0  # QK-norm's initial gain on q: > 1 starts attention sharper (an init, not a switch)
    smear: bool = False  # each position's embedding adds a learned share of the previous one's
    x0_skip: bool = False  # each block after the first adds a learned multiple of the embeddings
    n_kv_head: int | None = None  # None: n_head (multi-head attention)
    head_dim: int | None = None  # None: n_embd // n_head

    def __post_init__(self) -> None:
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}={getattr(self, key)!r}: must be positive")
        for key, kind in (("position", Position), ("norm", Norm), ("mlp", Mlp)):
            if getattr(self, key) not in get_args(kind):
                raise ValueError(f"{key}={getattr(self, key)!r}: must be one of {', '.join(get_args(kind))}")
        if self.head_dim is None and self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd={self.n_embd}: not divisible by n_head={self.n_head} (or set head_dim)")
        if self.head_dim is not None and self.head_dim <= 0:
            raise ValueError(f"head_dim={self.head_dim}: must be positive (or null for n_embd // n_head)")
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head != 0):
            raise ValueError(f"n_kv_head={self.n_kv_head}: must divide n_head={self.n_head} (or null for n_head)")
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(f"head_dim={self.head_size}: RoPE rotates pairs, so the head size must be even")
        if not ROPE_BASE_RANGE[0] < self.rope_base <= ROPE_BASE_RANGE[1]:
            raise ValueError(f"rope_base={self.rope_base}: must be in ({ROPE_BASE_RANGE[0]:g}, {ROPE_BASE_RANGE[1]:g}]")
        if not NORM_EPS_RANGE[0] <= self.norm_eps <= NORM_EPS_RANGE[1]:
            raise ValueError(f"norm_eps={self.norm_eps}: must be in [{NORM_EPS_RANGE[0]:g}, {NORM_EPS_RANGE[1]:g}]")
        if self.mlp_hidden is not None and self.mlp_hidden <= 0:
            raise ValueError(f"mlp_hidden={self.mlp_hidden}: must be positive (or null for the default)")
        if self.logit_softcap is not None and not self.logit_softcap > 0:
            raise ValueError(f"logit_softcap={self.logit_softcap}: must be > 0 (or null for none)")
        if not 0.0 < self.q_norm_gain <= 100.0:
            raise ValueError(f"q_norm_gain={self.q_norm_gain}: must be in (0, 100]")
        if self.q_norm_gain != 1.0 and not self.qk_norm:
            raise ValueError(f"q_norm_gain={self.q_norm_gain}: initializes QK-norm's gain, so needs qk_norm=true")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout}: must be in [0, 1)")

    @property
    def head_size(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    @property
    def n_kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden_size(self) -> int:
        """The MLP's inner width: SwiGLU's default keeps GELU's parameter count (3 matrices of 8/3 C)."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":
            return max(64, 64 * round(8 * self.n_embd / 3 / 64))
        return 4 * self.n_embd


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm: normalize in float32, cast back, then apply the gain."""
    return weight * F.rms_norm(x.float(), (x.size(-1),), eps=eps).type_as(x)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap): logits stay within (-cap, cap); None leaves them as they are."""
    return logits if cap is None else cap * torch.tanh(logits / cap)


def smear(x: torch.Tensor, gain: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """x_t + gain * x_(t-1) over (B, T, C); the first position adds `previous` (B, 1, C), or nothing."""
    if previous is None:
        return torch.cat((x[:, :1], x[:, 1:] + gain * x[:, :-1]), dim=1)
    return x + gain * torch.cat((previous, x[:, :-1]), dim=1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, nh, T, hs) by the angles of its positions; cos and sin are (T, hs)."""
    return x * cos + rotate_half(x) * sin


def rope_tables(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (block_size, head_size) of Hugging Face's default rotary embedding."""
    hs = config.head_size
    inv_freq = 1.0 / (config.rope_base ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))  # (hs/2,)
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)  # (T, hs/2)
    angles = torch.cat((angles, angles), dim=-1)  # (T, hs): the half-split layout
    return angles.cos(), angles.sin()


def mlp_activation(kind: str, h: torch.Tensor) -> torch.Tensor:
    """The MLP's nonlinearity on c_fc's output; SwiGLU's holds [gate; up] and halves the width."""
    if kind == "gelu":
        return F.gelu(h)
    if kind == "gelu_tanh":  # Hugging Face's gelu_new: what OpenAI's GPT-2 checkpoints were trained with
        return F.gelu(h, approximate="tanh")
    if kind == "relu2":
        return F.relu(h).square()
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_heads, config.head_size
        self.dropout = config.dropout
        qkv = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, qkv, bias=config.bias)  # [q; k; v] in one matmul
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.norm_eps)
        self.c_proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        B, T, _ = x.size()
        q, k, v = self.qkv(x, rope)  # (B, nh, T, hs), (B, nkv, T, hs) x 2
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=True,
            enable_gqa=self.n_kv_head != self.n_head,  # on CPU ~1.3x faster than repeat_interleave of k, v
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # (B, T, nh * hs)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)

    def qkv(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values of x (B, T, C), normed and rotated: what attention and the KV cache use.

        Queries and keys stay one tensor while they are normed and rotated: half the element-wise ops.
        """
        B, T, _ = x.size()
        nh, nkv, hs = self.n_head, self.n_kv_head, self.head_dim
        qk, v = self.c_attn(x).view(B, T, nh + 2 * nkv, hs).split([nh + nkv, nkv], dim=2)  # (B, T, nh+nkv | nkv, hs)
        if hasattr(self, "q_norm"):  # Qwen3: per head, before the rotation; q's gain on q's heads, k's on k's
            gain = torch.cat((self.q_norm.weight.expand(nh, hs), self.k_norm.weight.expand(nkv, hs)))  # (nh+nkv, hs)
            qk = rms_norm(qk, gain, self.q_norm.eps)
        qk, v = qk.transpose(1, 2), v.transpose(1, 2)  # (B, nh+nkv, T, hs), (B, nkv, T, hs)
        if rope is not None:
            qk = apply_rope(qk, *rope)
        q, k = qk.split([nh, nkv], dim=1)  # (B, nh, T, hs), (B, nkv, T, hs)
        return q, k, v


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.kind = config.mlp
        hidden = config.hidden_size
        fc_out = 2 * hidden if config.mlp == "swiglu" else hidden  # SwiGLU: [gate; up] in one matmul
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(mlp_activation(self.kind, self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope)
        x = x + self.mlp(self.ln_2(x))
        return x  # (B, T, C)


# How the optimizers treat each parameter, read from its name alone (so it holds for sharded or
# compiled copies whose shapes differ): the 2-D matmul weights inside the blocks, the embedding
# tables, an untied output head, and the 1-D gains and biases.
PARAM_ROLES = ("hidden_matrices", "embeddings", "head", "gains_and_biases")


def param_role(name: str) -> str:
    parts = name.split(".")
    if parts[-1] == "weight" and len(parts) >= 2:
        if parts[-2] in ("c_attn", "c_proj", "c_fc"):
            return "hidden_matrices"
        if parts[-2] in ("wte", "wpe"):
            return "embeddings"
        if parts[-2] == "lm_head":
            return "head"
    return "gains_and_biases"


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.position == "learned":
            modules["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        modules |= dict(
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config, config.n_embd),
        )
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:  # the output projection reuses the token embedding (fewer parameters)
            self.transformer.wte.weight = self.lm_head.weight
        if config.position == "rope":  # not saved: derived from the config, as in Hugging Face
            cos, sin = rope_tables(config)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, hs)
            self.register_buffer("rope_sin", sin, persistent=False)
        if config.smear:  # from 0: the model starts as without it
            self.smear_gain = nn.Parameter(torch.zeros(config.n_embd))
        if config.x0_skip:
            self.x0_gains = nn.Parameter(torch.zeros(config.n_layer - 1))

        self.apply(self._init_weights)
        if config.qk_norm:
            for block in self.transformer.h:
                nn.init.constant_(block.attn.q_norm.weight, config.q_norm_gain)
        # GPT-2 init: scale residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth. zero_init_proj starts each block as the identity instead.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.zero_init_proj and not config.tie_embeddings:
            nn.init.zeros_(self.lm_head.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings are excluded by default, as in GPT-2's reporting."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def rope(self, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos and sin of positions start..end-1 (None without RoPE)."""
        if self.config.position != "rope":
            return None
        return self.rope_cos[start:end], self.rope_sin[start:end]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head on final-normed states (..., C) -> (..., vocab), soft-capped if configured."""
        return softcap(self.lm_head(x), self.config.logit_softcap)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (logits, loss). Without targets only the last position's logits are computed.

        `reduction="none"` gives the loss of every target token, (B*T,), e.g. for evaluation metrics.
        """
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.config.smear:
            x = smear(x, self.smear_gain)
        if "wpe" in self.transformer:
            x = x + self.transformer.wpe(torch.arange(0, T, dtype=torch.long, device=idx.device))  # + (T, C)
        x = x0 = self.transformer.drop(x)
        rope = self.rope(0, T)
        for i, block in enumerate(self.transformer.h):
            if i and self.config.x0_skip:
                x = x + self.x0_gains[i - 1] * x0
            x = block(x, rope)
        x = self.transformer.ln_f(x)  # (B, T, C)

        if targets is None:
            return self.logits(x[:, [-1], :]), None  # (B, 1, vocab): generation needs only the last step
        logits = self.logits(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1, reduction=reduction)
        return logits, loss

    def params_by_role(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """(name, parameter) pairs per PARAM_ROLES entry; a tied head appears once, as the embedding."""
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {role: [] for role in PARAM_ROLES}
        for name, p in self.named_parameters():  # shared tensors are listed once
            if p.requires_grad:
                groups[param_role(name)].append((name, p))
        return groups

    def optimizer_param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: decay the matrices, embeddings and head; never biases or norm gains."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]  # in model order, as before
        return [
            {"params": [p for n, p in named if param_role(n) != "gains_and_biases"], "weight_decay": weight_decay},
            {"params": [p for n, p in named if param_role(n) == "gains_and_biases"], "weight_decay": 0.0},
        ]
