"""Time one optimizer step, and one whole training step, for AdamW and Muon on the shakespeare_char CPU model.

    python bench/optimizer_step.py [--threads 2] [--rounds 30] [--steps 20] [--no-torch-muon]
        [--muon 5 3:aol 3:aol:neuron-norm]

The model is experiment=shakespeare_char_cpu's shape (4 layers, 4 heads, 128 wide, block 64, 66-token
vocabulary; batch 12). Contenders run in alternation, `--steps` steps per round, and the script prints
each one's median ms per step over `--rounds` rounds, and its ratios as the median of the round-by-round
ratios (alternating, pairing within a round and taking medians keeps a shared machine's load from favouring
one of them):

  optimizer step alone, on the modern model's parameters with fixed random gradients:
    adamw            build_optimizer's AdamW (fused where torch has the kernel, model/optimizers.py)
    adamw foreach    torch.optim.AdamW(foreach=True), torch's default on CPU
    muon (ours)      MuonWithAdamW: float32 Newton-Schulz on the 16 hidden matrices, AdamW on the rest
    torch.optim.Muon torch's Muon (bfloat16 Newton-Schulz) on the hidden matrices + AdamW on the rest
  whole training step (forward, backward, clip, step) with a fresh batch:
    nanoGPT recipe   GPT-2 layout + AdamW (experiment=shakespeare_char_cpu)
    modern + adamw   arch=modern's switches + AdamW: the step Muon's is compared with
    modern + muon ns=K P  arch=modern + optimizer=muon (experiment=shakespeare_char_cpu_modern) with K
                     Newton-Schulz iterations (optimizer.ns_steps) after preconditioning P
                     (optimizer.ns_precondition, default frobenius), with NorMuon's per-neuron
                     normalization if the row asks for it: one row per --muon K[:P][:neuron-norm]
    modern + torch.optim.Muon
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fragment_llm.model.gpt import GPT, GPTConfig  # noqa: E402
from fragment_llm.model.optimizers import build_optimizer  # noqa: E402

SHAPE = dict(vocab_size=66, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
MODERN = {k: v for k, v in OmegaConf.load(REPO / "conf" / "arch" / "modern.yaml").items() if v is not None}
ADAMW = dict(name="adamw", lr=1e-3, min_lr=1e-4, weight_decay=0.1, betas=[0.9, 0.99], warmup_steps=100)
MUON = dict(name="muon", lr=0.02, min_lr=0.0, weight_decay=0.0, betas=[0.8, 0.95], warmup_steps=100, adam_lr=0.01)


def torch_muon(model: GPT) -> torch.optim.Optimizer:
    """torch.optim.Muon on the hidden matrices and AdamW on the rest, stepped together."""
    roles = model.params_by_role()
    muon = torch.optim.Muon([p for _, p in roles["hidden_matrices"]], lr=0.02, weight_decay=0.0)
    rest = [p for role in ("embeddings", "head", "gains_and_biases") for _, p in roles[role]]
    adamw = torch.optim.AdamW(rest, lr=0.01, betas=(0.8, 0.95), weight_decay=0.0)

    class Both:
        param_groups = muon.param_groups + adamw.param_groups

        def step(self) -> None:
            muon.step()
            adamw.step()

        def zero_grad(self, set_to_none: bool = True) -> None:
            muon.zero_grad(set_to_none)
            adamw.zero_grad(set_to_none)

    return Both()


def optimizer_only(kind: str) -> tuple[GPT, object]:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SHAPE, **MODERN))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    if kind == "adamw":
        return model, build_optimizer(model, ADAMW, 2000)[0]
    if kind == "adamw foreach":
        return model, torch.optim.AdamW(model.optimizer_param_groups(0.1), lr=1e-3, betas=(0.9, 0.99), foreach=True)
    if kind == "muon (ours)":
        return model, build_optimizer(model, MUON, 2000)[0]
    return model, torch_muon(model)


def training_step(kind: str, muon: dict | None = None) -> tuple[GPT, object]:
    """The model and optimizer of a row; Muon's rows give their optimizer settings in `muon`."""
    torch.manual_seed(0)
    if kind == "nanoGPT recipe":
        model = GPT(GPTConfig(**SHAPE))
        return model, build_optimizer(model, ADAMW, 2000)[0]
    model = GPT(GPTConfig(**SHAPE, **MODERN))
    if kind == "modern + adamw":
        return model, build_optimizer(model, ADAMW, 2000)[0]
    if muon is not None:
        return model, build_optimizer(model, {**MUON, **muon}, 2000)[0]
    return model, torch_muon(model)


def muon_settings(row: str) -> dict:
    """--muon's "3:aol:neuron-norm" as optimizer settings."""
    steps, *options = row.split(":")
    unknown = set(options) - {"frobenius", "aol", "neuron-norm"}
    if unknown:
        raise SystemExit(f"--muon {row}: unknown {', '.join(sorted(unknown))}; use K[:frobenius|aol][:neuron-norm]")
    precondition = "aol" if "aol" in options else "frobenius"
    return dict(ns_steps=int(steps), ns_precondition=precondition, neuron_norm="neuron-norm" in options)


def time_rounds(setups: dict[str, tuple[GPT, object]], work, rounds: int, steps: int) -> dict[str, list[float]]:
    """ms per step of each contender in each round (the contenders run one after another in every round)."""
    times: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(rounds):
        for name, (model, opt) in setups.items():
            start = time.perf_counter()
            for _ in range(steps):
                work(model, opt)
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    return times


def round_ratios(times: list[float], baseline: list[float]) -> list[float]:
    """A contender's time over the baseline's in the same round, sorted: a host that speeds up or slows down
    between rounds moves both sides of each ratio alike."""
    return sorted(t / b for t, b in zip(times, baseline, strict=True))


def paired_ratio(times: list[float], baseline: list[float]) -> float:
    """The median over rounds of round_ratios."""
    return statistics.median(round_ratios(times, baseline))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-torch-muon", action="store_true", help="skip torch.optim.Muon (slow without bf16 units)")
    parser.add_argument("--muon", nargs="+", default=["5"], help="Muon rows: K[:frobenius|aol][:neuron-norm]")
    args = parser.parse_args()
    muons = {f"modern + muon ns={' '.join(row.split(':'))}": muon_settings(row) for row in args.muon}
    torch_too = () if args.no_torch_muon else ("torch.optim.Muon",)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.rounds} rounds x {args.steps} steps, medians")

    def step_only(model: GPT, opt) -> None:
        opt.step()

    kinds = ("adamw", "adamw foreach", "muon (ours)", *torch_too)
    opt_ms = time_rounds({k: optimizer_only(k) for k in kinds}, step_only, args.rounds, args.steps)
    print("\noptimizer step alone (ms, median; then the median of round-by-round ratios):")
    for k, ms in opt_ms.items():
        print(f"  {k:18s} {statistics.median(ms):8.2f}  ({paired_ratio(ms, opt_ms['adamw']):.2f}x adamw)")

    batch = torch.Generator().manual_seed(0)

    def train_step(model: GPT, opt) -> None:
        idx = torch.randint(0, 66, (12, 65), generator=batch)
        _, loss = model(idx[:, :-1], idx[:, 1:].contiguous())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    kinds = ("nanoGPT recipe", "modern + adamw", *muons, *(f"modern + {k}" for k in torch_too))
    step_ms = time_rounds({k: training_step(k, muons.get(k)) for k in kinds}, train_step, args.rounds, args.steps)
    print("\nwhole training step, batch 12 x 64 (ms, median; then the median of round-by-round ratios):")
    for k, ms in step_ms.items():
        vs_nanogpt = paired_ratio(ms, step_ms["nanoGPT recipe"])
        print(f"  {k:48s} {statistics.median(ms):8.2f}  ({vs_nanogpt:.2f}x the nanoGPT recipe)")
    for row in muons:
        spread = round_ratios(step_ms[row], step_ms["modern + adamw"])
        cost = statistics.median(spread)
        quartiles = f"{spread[len(spread) // 4]:.2f}-{spread[(3 * len(spread)) // 4]:.2f}"
        print(f"{row}: {cost:.3f}x the AdamW step on the same model (middle half of the rounds {quartiles}; "
              f"issue 12's target: <= 1.15x)")  # fmt: skip


if __name__ == "__main__":
    main()
