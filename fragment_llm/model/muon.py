"""Muon for the hidden matrices and AdamW for everything else, as one torch optimizer.

Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/) replaces each 2-D weight's
momentum update by its nearest semi-orthogonal matrix, found with a few Newton-Schulz
iterations. It suits the matrices inside the blocks; embeddings, the output head, gains and
biases keep AdamW.

Why not `torch.optim.Muon`: it runs Newton-Schulz in bfloat16, and on CPUs without bf16
matrix units (AVX2, most laptops) bf16 matmuls are emulated: bench/optimizer_step.py
measured its step many times slower than the same iteration in float32 here. The algorithm,
its coefficients and its learning-rate adjustment are torch's ("original", Keller's), and
tests check that both give the same update up to bf16 rounding. Two later refinements are
options, off by default: AOL preconditioning (`ns_precondition="aol"`, Turbo-Muon's), which
lets fewer iterations do, and NorMuon's per-neuron normalization (`neuron_norm=True`).

Why one optimizer object: Lightning's automatic optimization (gradient accumulation,
clipping, mixed precision, checkpoints, LR schedulers) takes one optimizer per step. This
class holds all parameter groups, each tagged `kind: muon | adamw`; AdamW's groups are
stepped by an inner `torch.optim.AdamW` that shares the same group dicts and state, so
`state_dict()` round-trips both for exact resumes and a scheduler sees every group.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fragment_llm.checkpoint_file import field_error

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # torch.optim.Muon's (Keller Jordan's quintic)
NEURON_NORM_BETA = 0.95  # NorMuon's beta2 for the per-neuron second moment
NS_PRECONDITIONS = ("frobenius", "aol")


def orthogonalize(g: torch.Tensor, steps: int, precondition: str = "frobenius", eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T by torch.optim.Muon's Newton-Schulz iteration, in float32; g is
    2-D or a batch (k, m, n) of matrices of one shape (one call for a model's k same-shape matrices).

    Each step is x <- a x + (b A + c A^2) x with A = x x^T (x wide: m x n, m <= n). For a matrix at
    least twice as wide as tall the same steps run in the m x m Gram space, which is cheaper: every
    x_k is q_k x_0 with q_k a polynomial in A_0, so A_{k+1} = p_k^2 A_k and q_{k+1} = p_k q_k for
    p_k = a + b A_k + c A_k^2, and x_0 is multiplied once at the end (8m^3 per step instead of
    4m^2 n + 2m^3; this model's MLP and QKV matrices: ~25% less time per optimizer step).

    `precondition` scales x so that its spectral norm is <= 1 before the iterations: "frobenius" divides by
    its Frobenius norm (torch.optim.Muon's); "aol" scales each row i by (sum_j |A_ij|)^-1/2 (A = x x^T), the
    almost-orthogonal-layer bound of Prach & Lampert (2022) that Turbo-Muon (modded-nanogpt, 2025-11) uses: it
    starts the singular values nearer 1, so fewer iterations do (three after it trained as well as five after
    the Frobenius norm on shakespeare_char, BENCHMARKS.md).
    """
    a, b, c = NS_COEFFICIENTS
    x = g.float()
    batched = x.dim() == 3  # (k, m, n): k matrices of one shape in one call, as the optimizer step does
    if not batched:
        x = x.unsqueeze(0)
    tall = x.size(1) > x.size(2)
    if tall:
        x = x.mT  # iterate on the smaller Gram matrix
    m, n = x.shape[1:]
    x, gram = scale_into_unit_ball(x, precondition, eps)
    if n < 2 * m:
        for step in range(steps):
            gram = x @ x.mT if gram is None or step > 0 else gram
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    else:
        gram = x @ x.mT if gram is None else gram
        eye, q = torch.eye(m, dtype=x.dtype, device=x.device), None
        for step in range(steps):
            p = torch.baddbmm(a * eye + b * gram, gram, gram, alpha=c)  # (k, m, m)
            q = p if q is None else p @ q
            if step < steps - 1:  # the last step's Gram matrix is never used
                gram = p @ (p @ gram)
        x = q @ x
    x = x.mT if tall else x
    return (x if batched else x.squeeze(0)).to(g.dtype)


def scale_into_unit_ball(x: torch.Tensor, precondition: str, eps: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (k, m, n), m <= n, scaled to spectral norm <= 1, and its Gram matrix x x^T where it was computed."""
    if precondition == "aol":
        gram = x @ x.mT  # (k, m, m)
        scale = gram.abs().sum(dim=2, keepdim=True).clamp(min=eps).rsqrt()  # (k, m, 1): one factor per row of x
        return x * scale, gram * scale * scale.mT  # the Schur test bounds the result's spectral norm by 1
    if precondition == "frobenius":
        return x / x.norm(dim=(1, 2), keepdim=True).clamp(min=eps), None
    raise ValueError(f"precondition={precondition!r}: use one of {NS_PRECONDITIONS}")


# The state tensors a parameter p may have, and their shapes: anything else in a saved state is refused.
_STATE_SHAPES = {
    "momentum_buffer": lambda p: tuple(p.shape),
    "neuron_second_moment": lambda p: (p.shape[0], 1),
    "exp_avg": lambda p: tuple(p.shape),
    "exp_avg_sq": lambda p: tuple(p.shape),
    "step": lambda p: (),
}


def _check_rate(name: str, value: Any) -> None:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise field_error(name, value, "must be a finite number >= 0")


def check_muon_options(name: str, group: dict[str, Any]) -> None:
    """The options a saved Muon group gives step() (torch restores them from the file): none may hang, crash or
    corrupt it. ns_precondition and neuron_norm may be absent (checkpoints from before they existed)."""
    for key in ("lr", "weight_decay", "momentum"):
        _check_rate(f"{name}.{key}", group.get(key))
    if not group["momentum"] < 1:
        raise field_error(f"{name}.momentum", group["momentum"], "must be < 1")
    steps = group.get("ns_steps")
    if type(steps) is not int or not 1 <= steps < 100:
        raise field_error(f"{name}.ns_steps", steps, "must be an integer from 1 to 99")
    if group.get("ns_precondition", "frobenius") not in NS_PRECONDITIONS:
        raise field_error(f"{name}.ns_precondition", group["ns_precondition"], f"must be one of {NS_PRECONDITIONS}")
    for key, value in (("nesterov", group.get("nesterov")), ("neuron_norm", group.get("neuron_norm", False))):
        if type(value) is not bool:
            raise field_error(f"{name}.{key}", value, "must be true or false")


def check_saved_state(groups: list[dict[str, Any]], saved: dict[str, Any]) -> None:
    """Refuse (CheckpointError) a saved optimizer state that does not fit these groups. torch's load_state_dict
    restores every group's options from it and casts its tensors to the parameters' dtypes without looking at
    kinds, values or shapes: a relabelled group, a NaN learning rate or a (10**9, 1) broadcast "moment" would
    crash, corrupt or exhaust memory later."""
    old_groups, state = saved.get("param_groups"), saved.get("state")
    if not isinstance(old_groups, list) or len(old_groups) != len(groups) or not isinstance(state, dict):
        why = f"must be {len(groups)} groups beside a state mapping"
        raise field_error("optimizer state param_groups", type(old_groups).__name__, why)
    for i, (live, old) in enumerate(zip(groups, old_groups, strict=True)):
        name = f"optimizer state param_groups[{i}]"
        if not isinstance(old, dict) or old.get("kind") != live["kind"]:
            kind = old.get("kind") if isinstance(old, dict) else old
            raise field_error(f"{name}.kind", kind, f"must be {live['kind']!r}")
        if live["kind"] == "muon":
            check_muon_options(name, old)
        else:
            for key in ("lr", "weight_decay", "eps"):
                _check_rate(f"{name}.{key}", old.get(key))
            betas = old.get("betas")
            if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(0 <= b < 1 for b in betas):
                raise field_error(f"{name}.betas", betas, "must be two numbers in [0, 1)")
        for p, pid in zip(live["params"], old.get("params", []), strict=False):
            entries = state.get(pid, {})
            for key, t in entries.items() if isinstance(entries, dict) else [("", entries)]:
                shape = _STATE_SHAPES[key](p) if key in _STATE_SHAPES else None
                if shape is None or not torch.is_tensor(t) or tuple(t.shape) != shape or not t.is_floating_point():
                    raise field_error(f"optimizer state state[{pid}].{key}", t, f"must be a float tensor of {shape}")
                if not torch.isfinite(t).all():
                    raise field_error(f"optimizer state state[{pid}].{key}", t, "must be finite")


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on the groups tagged `kind="muon"` (2-D tensors only), AdamW on those tagged `kind="adamw"`.

    Muon groups take lr, momentum, nesterov, ns_steps, ns_precondition, neuron_norm, weight_decay; AdamW groups
    take AdamW's options (lr, betas, eps, weight_decay, ...), given in `adamw` for all of them. neuron_norm adds
    NorMuon's per-neuron normalization of the orthogonalized update (its running moments are optimizer state).
    """

    def __init__(
        self,
        muon_groups: list[dict[str, Any]],
        adamw_groups: list[dict[str, Any]],
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_precondition: str = "frobenius",
        neuron_norm: bool = False,
        weight_decay: float = 0.0,
        adamw: dict[str, Any] | None = None,
    ) -> None:
        for group in muon_groups:
            for p in group["params"]:
                if (p[1] if isinstance(p, tuple) else p).dim() != 2:
                    raise ValueError("Muon updates 2-D matrices only; give other parameters to AdamW")
        muon = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, weight_decay=weight_decay)
        muon |= dict(ns_precondition=ns_precondition, neuron_norm=neuron_norm)
        muon_groups = [{**muon, **g, "kind": "muon"} for g in muon_groups]
        self.adamw = torch.optim.AdamW([{**g, "kind": "adamw"} for g in adamw_groups], **(adamw or {}))
        super().__init__(muon_groups + self.adamw.param_groups, {})  # AdamW's groups: the dicts it completed
        self._link()

    def _link(self) -> None:
        """Point the inner AdamW at this optimizer's AdamW groups and state (again after load_state_dict)."""
        self.adamw.param_groups = [g for g in self.param_groups if g["kind"] == "adamw"]
        self.adamw.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_saved_state(self.param_groups, state_dict)  # before torch restores options and casts tensors
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["kind"] != "muon":
                continue
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            grads = [p.grad for p in params]
            bufs = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
            torch._foreach_lerp_(bufs, grads, 1 - momentum)
            updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, p in enumerate(params):
                by_shape.setdefault(tuple(p.shape), []).append(i)
            for shape, idx in by_shape.items():  # one batched Newton-Schulz per shape: fewer, larger matmuls
                ortho = orthogonalize(
                    torch.stack([updates[i] for i in idx]), group["ns_steps"], group.get("ns_precondition", "frobenius")
                )
                targets = [params[i] for i in idx]
                if group.get("neuron_norm", False):
                    ortho = self._normalize_neurons(ortho, targets)
                scale = -lr * math.sqrt(max(1.0, shape[0] / shape[1]))  # torch's "original" adjustment
                if wd:
                    torch._foreach_mul_(targets, 1 - lr * wd)
                torch._foreach_add_(targets, list(ortho.unbind(0)), alpha=scale)
        self.adamw.step()
        return loss

    def _normalize_neurons(self, ortho: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
        """NorMuon (Li et al., 2025): divide each row (output neuron) of the orthogonalized updates (k, m, n) by
        the root of its mean square's running average, then restore each update's Frobenius norm."""
        mean_square = ortho.square().mean(dim=-1, keepdim=True)  # (k, m, 1)
        moments = [self.state[p].setdefault("neuron_second_moment", torch.zeros_like(p[:, :1])) for p in params]
        torch._foreach_lerp_(moments, list(mean_square.unbind(0)), 1 - NEURON_NORM_BETA)
        normed = ortho / (torch.stack(moments).sqrt() + 1e-8)
        norms = ortho.norm(dim=(1, 2), keepdim=True) / normed.norm(dim=(1, 2), keepdim=True).clamp(min=1e-12)
        return normed * norms
