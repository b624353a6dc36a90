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
    batched = g.dim() == 3
    (x,) = orthogonalize_stacks([g if batched else g.unsqueeze(0)], steps, precondition, eps)
    return x if batched else x.squeeze(0)


def orthogonalize_stacks(
    stacks: list[torch.Tensor], steps: int, precondition: str = "frobenius", eps: float = 1e-7
) -> list[torch.Tensor]:
    """`orthogonalize` for several stacks (k, m, n) at once, one per shape of a model's matrices. Stacks whose
    Gram matrices have one size share one batch of them (fewer, larger operations: on a 2-core AVX2 CPU a batch
    of 16 128 x 128 products ran at ~160 GFLOP/s, one of 4 at ~120), those iterating in Gram space first, so
    that one polynomial runs on their slice of it."""
    wide = [g.float().mT if g.size(1) > g.size(2) else g.float() for g in stacks]  # m <= n: the smaller Gram
    results: list[torch.Tensor | None] = [None] * len(stacks)
    by_size: dict[int, list[int]] = {}
    for i, x in enumerate(wide):
        by_size.setdefault(x.size(1), []).append(i)
    for m, members in by_size.items():
        gram_space = {i: wide[i].size(2) >= 2 * m for i in members}  # n >= 2m: cheaper in the m x m Gram space
        members.sort(key=lambda i: not gram_space[i])  # those first
        sizes = [wide[i].size(0) for i in members]
        grams = torch.empty(sum(sizes), m, m, dtype=torch.float32, device=stacks[0].device)
        for i, gram in zip(members, grams.split(sizes), strict=True):
            torch.bmm(wide[i], wide[i].mT, out=gram)
        scale = unit_ball_scale(grams, precondition, eps)  # x * scale has spectral norm <= 1
        grams.mul_(scale).mul_(scale.mT)  # the Gram matrices of x * scale
        in_gram_space = sum(k for i, k in zip(members, sizes, strict=True) if gram_space[i])
        if in_gram_space:  # q (x * scale), the scale folded into q's columns
            q = gram_space_polynomial(grams[:in_gram_space], steps).mul_(scale[:in_gram_space].mT)
        start = 0
        for i, k in zip(members, sizes, strict=True):
            x, tall, end = wide[i], stacks[i].size(1) > stacks[i].size(2), start + k
            if end <= in_gram_space:  # a tall stack's (q x)^T = x^T q^T: in its own layout, contiguous
                results[i] = x.mT @ q[start:end].mT if tall else q[start:end] @ x
            else:
                x = _newton_schulz(x * scale[start:end], grams[start:end], steps)
                results[i] = x.mT if tall else x
            start = end
    return [x.to(g.dtype) for x, g in zip(results, stacks, strict=True)]


def _newton_schulz(x: torch.Tensor, gram: torch.Tensor, steps: int) -> torch.Tensor:
    """The iteration on wide matrices x (k, m, n) themselves, given their Gram matrices x x^T."""
    a, b, c = NS_COEFFICIENTS
    for step in range(steps):
        gram = x @ x.mT if step > 0 else gram
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x


def gram_space_polynomial(gram: torch.Tensor, steps: int) -> torch.Tensor:
    """q (k, m, m) such that the iteration takes x to q x, for x with x x^T = gram (see orthogonalize)."""
    a, b, c = NS_COEFFICIENTS
    a_eye, q = a * torch.eye(gram.size(-1), dtype=gram.dtype, device=gram.device), None
    for step in range(steps):
        p = torch.add(a_eye, gram, alpha=b).baddbmm_(gram, gram, alpha=c)  # a + b A + c A^2
        q = p if q is None else p @ q
        if step < steps - 1:  # the last step's Gram matrix is never used
            gram = p @ (p @ gram)
    return q


def unit_ball_scale(gram: torch.Tensor, precondition: str, eps: float) -> torch.Tensor:
    """The factor that scales x (k, m, n), m <= n, with Gram matrix `gram` = x x^T to spectral norm <= 1:
    one per row, (k, m, 1), for "aol" (the Schur test bounds the result's norm by 1); one per matrix, (k, 1, 1),
    for "frobenius" (its squared Frobenius norm is the Gram matrix's trace)."""
    if precondition == "aol":
        return gram.abs().sum(dim=2, keepdim=True).clamp(min=eps).rsqrt()
    if precondition == "frobenius":
        return gram.diagonal(dim1=1, dim2=2).sum(dim=1)[:, None, None].clamp(min=eps * eps).rsqrt()
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
        self._stacked: dict[int, tuple[tuple, _StackedState]] = {}  # per Muon group index, from its first step
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
        for index, group in enumerate(self.param_groups):
            if group["kind"] == "muon":
                self._muon_step(index, group)
        self.adamw.step()
        return loss

    def _muon_step(self, index: int, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        stacked = self._stacked_state(index, params, group.get("neuron_norm", False), group["nesterov"])
        for i, (p, buf) in enumerate(zip(stacked.params, stacked.momentum_views, strict=True)):
            buf.lerp_(p.grad, 1 - momentum)  # one matrix at a time: the second pass finds it in cache
            if group["nesterov"]:  # the update is grad + momentum * (buf - grad): buf moved toward grad again
                torch.lerp(buf, p.grad, 1 - momentum, out=stacked.update_views[i])
        orthos = orthogonalize_stacks(stacked.update, group["ns_steps"], group.get("ns_precondition", "frobenius"))
        if wd:
            torch._foreach_mul_(params, 1 - lr * wd)
        for same_shape, ortho, moments in zip(stacked.by_shape, orthos, stacked.moments, strict=True):
            m, n = ortho.shape[1:]
            scale = -lr * math.sqrt(max(1.0, m / n))  # torch's "original" adjustment
            if moments is not None:  # p += scale * factors * ortho, in one pass
                factors = _neuron_factors(ortho, moments)
                torch._foreach_addcmul_(same_shape, list(ortho.unbind(0)), list(factors.unbind(0)), value=scale)
            else:
                torch._foreach_add_(same_shape, list(ortho.unbind(0)), alpha=scale)

    def _stacked_state(
        self, index: int, params: list[torch.Tensor], neuron_norm: bool, nesterov: bool
    ) -> _StackedState:
        """Group `index`'s state as stacks, built again when the state was replaced (load_state_dict, a move to
        another device), other parameters have gradients or the group's options changed."""
        key = (tuple(map(id, params)), neuron_norm, nesterov)
        cached = self._stacked.get(index)
        if cached is not None and cached[0] == key and cached[1].holds(self.state):
            return cached[1]
        stacked = _StackedState(params, self.state, neuron_norm, nesterov)
        self._stacked[index] = (key, stacked)
        return stacked


def _neuron_factors(ortho: torch.Tensor, moments: torch.Tensor) -> torch.Tensor:
    """NorMuon (Li et al., 2025): the factors (k, m, 1) that divide each row (output neuron) of the
    orthogonalized updates (k, m, n) by the root of its mean square's running average (`moments`, updated in
    place) and then restore each update's Frobenius norm (found from the rows' mean squares, without a pass
    over the updates)."""
    k, m, n = ortho.shape
    if m > n:
        # a tall stack's squares stored as (k, n, m), so each row is summed in the order the updates' earlier,
        # transposed layout gave and trained weights stay bit-identical to BENCHMARKS.md's figures (summing along
        # contiguous rows changes only rounding, yet moved a 2000-step run's val loss by 0.004)
        squares = torch.mul(ortho, ortho, out=ortho.new_empty((k, n, m)).mT)
    else:
        squares = ortho.square()
    mean_square = squares.mean(dim=-1, keepdim=True)  # (k, m, 1)
    moments.lerp_(mean_square, 1 - NEURON_NORM_BETA)
    row_scale = moments.sqrt().add_(1e-8).reciprocal_()  # (k, m, 1)
    kept = mean_square.sum(dim=1, keepdim=True)  # each update's squared norm / n, and the normed one's:
    normed = (mean_square * row_scale.square()).sum(dim=1, keepdim=True).clamp_(min=1e-30)
    return row_scale.mul_((kept / normed).sqrt_())


class _StackedState:
    """A Muon group's matrices by shape, with their momentum buffers (and NorMuon's moments) held as one stack
    (k, m, n) per shape whose slices are the parameters' state entries, so that no step copies them into the
    stacks Newton-Schulz runs on. `update`, the stacks it runs on: a scratch stack per shape for the Nesterov
    update, else the momentum itself."""

    def __init__(self, params: list[torch.Tensor], state: dict, neuron_norm: bool, nesterov: bool) -> None:
        shapes: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for p in params:
            shapes.setdefault(tuple(p.shape), []).append(p)
        self.by_shape = list(shapes.values())
        self.params = [p for same in self.by_shape for p in same]
        self.momentum = [self._stack(same, state, "momentum_buffer", same[0].shape) for same in self.by_shape]
        self.moments = [
            self._stack(same, state, "neuron_second_moment", (same[0].size(0), 1)) if neuron_norm else None
            for same in self.by_shape
        ]
        self.update = [torch.empty_like(stack) for stack in self.momentum] if nesterov else self.momentum
        self.update_views = [view for stack in self.update for view in stack.unbind(0)] if nesterov else []
        keys = ("momentum_buffer", "neuron_second_moment") if neuron_norm else ("momentum_buffer",)
        self._entries = {key: [state[p][key] for p in self.params] for key in keys}  # the slices _stack put there
        self.momentum_views = self._entries["momentum_buffer"]

    @staticmethod
    def _stack(params: list[torch.Tensor], state: dict, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The params' state entries `key` (zeros where there are none yet) copied into one stack, and each entry
        replaced by its slice of it."""
        p0 = params[0]
        saved = [state[p].get(key) for p in params]
        stack = torch.stack([torch.zeros(shape, dtype=p0.dtype, device=p0.device) if t is None else t for t in saved])
        for p, view in zip(params, stack.unbind(0), strict=True):
            state[p][key] = view
        return stack

    def holds(self, state: dict) -> bool:
        """Whether the parameters' state entries are still these stacks' slices."""
        return all(
            state[p].get(key) is view
            for key, views in self._entries.items()
            for p, view in zip(self.params, views, strict=True)
        )
