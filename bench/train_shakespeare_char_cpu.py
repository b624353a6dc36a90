"""Train nanoGPT's shakespeare_char CPU recipe end to end and print loss, throughput and wall time.

    python bench/train_shakespeare_char_cpu.py [--data ../shared/data/tinyshakespeare.txt]
        [--seeds 1337 1 2] [--reference] [--estimates 200] [override ...]

Extra arguments are Hydra overrides (e.g. `trainer.max_steps=500`). nanoGPT reports val loss 1.88 at
step 2000 for this recipe; the issue measured 1.886 with nanoGPT's own loop on this machine.

nanoGPT's val loss is an estimate: the mean over 20 random batches of 12 windows (15,360 tokens)
drawn at each evaluation. Ours is the mean over the whole val split. To compare like with like
the script evaluates each trained model both ways: on the full split, and with `--estimates`
independent draws of nanoGPT's 20-batch estimator (their spread is that figure's noise).
`--reference` also trains the same model on the same tokens with a plain PyTorch loop written
the way nanoGPT's train.py works (random batches from the global torch RNG, its LR formula,
AdamW, clipping), so a gap between the Lightning loop and nanoGPT's algorithm would show.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fragment_llm.data.pipeline import prepare_token_cache  # noqa: E402
from fragment_llm.inference.loading import load_checkpoint  # noqa: E402
from fragment_llm.model.gpt import GPT, GPTConfig  # noqa: E402
from fragment_llm.training.run import train  # noqa: E402

NANOGPT_LOSS = 1.886  # nanoGPT's own loop on this machine, step 2000 (issue #5)
EVAL_BATCHES = 20  # nanoGPT's eval_iters for its CPU recipe


@torch.no_grad()
def window_losses(model: GPT, tokens: torch.Tensor, starts: torch.Tensor, block: int, chunk: int = 512) -> torch.Tensor:
    """Mean loss of each window tokens[s : s + block] -> tokens[s + 1 : s + block + 1], (N,)."""
    out = []
    offsets = torch.arange(block + 1)
    for part in starts.split(chunk):
        rows = tokens[part[:, None] + offsets]  # (n, block + 1)
        logits, _ = model(rows[:, :-1], rows[:, 1:].contiguous())  # targets: all T logits
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="none")  # (n, T)
        out.append(loss.mean(dim=1))
    return torch.cat(out)


def evaluate(model: GPT, val: torch.Tensor, batch: int, draws: int) -> dict[str, float]:
    """Full-split loss (non-overlapping windows) and `draws` samples of nanoGPT's 20-batch estimate."""
    model.eval()
    block = model.config.block_size
    full = window_losses(model, val, torch.arange(0, len(val) - block, block), block).mean().item()
    result = {"full": full}
    if draws:
        g = torch.Generator().manual_seed(0)
        starts = torch.randint(len(val) - block, (draws * EVAL_BATCHES * batch,), generator=g)
        estimates = window_losses(model, val, starts, block).view(draws, -1).mean(dim=1).tolist()
        result |= {
            "est_mean": statistics.fmean(estimates),
            "est_sd": statistics.stdev(estimates),
            "est_min": min(estimates),
            "est_max": max(estimates),
            "est_at_most_nanogpt": sum(e <= NANOGPT_LOSS for e in estimates) / draws,
        }
    return result


def nanogpt_lr(it: int, lr: float, min_lr: float, warmup: int, decay: int) -> float:
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr over `decay` iterations."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay:
        return min_lr
    ratio = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def reference_loop(cfg, vocab_size: int, train_tokens: torch.Tensor, seed: int) -> tuple[GPT, float]:
    """nanoGPT's training loop for this recipe, in plain PyTorch, on our GPT and our token cache."""
    torch.manual_seed(seed)
    m, o, d = cfg.model, cfg.optimizer, cfg.data
    model = GPT(GPTConfig(vocab_size, m.block_size, m.n_layer, m.n_head, m.n_embd, m.dropout, m.bias))
    optimizer = torch.optim.AdamW(model.optimizer_param_groups(o.weight_decay), lr=o.lr, betas=tuple(o.betas))
    block, steps = m.block_size, cfg.trainer.max_steps
    offsets = torch.arange(block + 1)
    start = time.perf_counter()
    for it in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = nanogpt_lr(it, o.lr, o.min_lr, o.warmup_steps, o.decay_steps or steps)
        rows = train_tokens[torch.randint(len(train_tokens) - block, (d.batch_size,))[:, None] + offsets]
        _, loss = model(rows[:, :-1], rows[:, 1:].contiguous())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, steps * d.batch_size * block / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337])
    parser.add_argument("--reference", action="store_true", help="also train with a plain nanoGPT-style loop")
    parser.add_argument("--estimates", type=int, default=200, help="draws of nanoGPT's 20-batch estimator")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}, cpus {os.cpu_count()}")
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose(
                "train",
                [
                    "experiment=shakespeare_char_cpu",
                    f"data.path={args.data}",
                    f"paths.root_dir={tmp}",
                    f"paths.output_dir={tmp}/run",
                    f"seed={seed}",
                    "trainer.enable_progress_bar=false",
                    *args.overrides,
                ],
            )
            start = time.perf_counter()
            result = train(cfg)
            wall = time.perf_counter() - start
            model, _ = load_checkpoint(Path(result["last_ckpt"]))
            cache = prepare_token_cache(cfg.data, cfg.tokenizer)
            val = torch.from_numpy(np.asarray(cache.tokens("val")).astype(np.int64))
            steps = result["global_step"]
            tokens = steps * cfg.data.batch_size * cfg.model.block_size * cfg.trainer.accumulate_grad_batches
            ev = evaluate(model, val, cfg.data.batch_size, args.estimates) | {"logged": result["val_loss"]}
            rate = result["tokens_per_sec"] or 0
            rows.append(("Fragment_LLM (Lightning)", seed, steps, ev, rate, tokens / wall, wall))
            if args.reference:
                train_tokens = torch.from_numpy(np.asarray(cache.tokens("train")).astype(np.int64))
                start = time.perf_counter()
                ref, rate = reference_loop(cfg, model.config.vocab_size, train_tokens, seed)
                ref_wall = time.perf_counter() - start
                ev = evaluate(ref, val, cfg.data.batch_size, args.estimates)
                rows.append(("plain nanoGPT-style loop", seed, cfg.trainer.max_steps, ev, rate, rate, ref_wall))
        for name, seed_, steps, ev, rate, overall, secs in rows[-2 if args.reference else -1 :]:
            print(f"\n{name}, seed {seed_}, {steps} steps")
            print(f"  val loss, full split      {ev['full']:.4f}")
            if "logged" in ev:
                print(f"  val/loss in TensorBoard   {ev['logged']:.4f}  (the same split, as the run logged it)")
            if "est_mean" in ev:
                print(
                    f"  nanoGPT's estimator       mean {ev['est_mean']:.4f}  sd {ev['est_sd']:.4f}  "
                    f"range {ev['est_min']:.4f}-{ev['est_max']:.4f}  "
                    f"<= {NANOGPT_LOSS} in {ev['est_at_most_nanogpt']:.0%} of {args.estimates} draws"
                )
            print(f"  tokens/s                  {rate:,.0f} while training, {overall:,.0f} over the wall time")
            print(f"  wall time                 {secs:.1f} s")
    if len(rows) > 1:
        print("\nmean full-split val loss by loop:")
        for name in dict.fromkeys(r[0] for r in rows):
            losses = [r[3]["full"] for r in rows if r[0] == name]
            print(f"  {name:26s} {statistics.fmean(losses):.4f} over {len(losses)} seed(s)")


if __name__ == "__main__":
    main()
