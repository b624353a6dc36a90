"""Loss at equal parameters and tokens: nanoGPT's shakespeare_char CPU recipe against the modern preset.

    python bench/arch_quality.py [--data ../shared/data/tinyshakespeare.txt] [--seeds 1337 1 2]
        [--table] [--table-steps 1000] [--table-seed 1337] [--table-rows NAME ...] [--skip-presets] [override ...]

Trains `experiment=shakespeare_char_cpu` (GPT-2 layout, AdamW, cosine) and
`experiment=shakespeare_char_cpu_modern` (arch=modern, optimizer=muon) for every seed, each with
Fragment_LLM's own training loop (train.py's code path), and prints the full-split val loss per
seed, both means and their difference, the parameter counts (`GPT.num_params()`), tokens/s and
wall time. Extra arguments are Hydra overrides applied to the modern preset's runs only.

`--table` then measures what each part buys, at `--table-steps` steps (the schedule shortened to
fit) and one seed: the modern preset with one switch at a time set back to its nanoGPT value
(leave-one-out), and the nanoGPT recipe with one modern part added; `--table-rows` runs only the rows whose
names contain one of the given words.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(REPO / "bench"))

from train_shakespeare_char_cpu import evaluate  # noqa: E402

from fragment_llm.data.pipeline import prepare_token_cache  # noqa: E402
from fragment_llm.inference.loading import load_checkpoint  # noqa: E402
from fragment_llm.training.run import train  # noqa: E402

NANOGPT, MODERN = "shakespeare_char_cpu", "shakespeare_char_cpu_modern"
GPT2_ARCH = ["arch=gpt2", "model.tie_embeddings=true"]
# name -> (preset, overrides): leave-one-out from the modern preset, then one part added to nanoGPT's recipe.
TABLE = {
    "modern preset (all switches, Muon)": (MODERN, []),
    "  - RoPE (learned positions)": (MODERN, ["model.position=learned"]),
    "  - RoPE base 1000 (10000)": (MODERN, ["model.rope_base=10000"]),
    "  - RMSNorm (LayerNorm)": (MODERN, ["model.norm=layernorm"]),
    "  - QK-norm": (MODERN, ["model.qk_norm=false", "model.q_norm_gain=1.0"]),  # the gain is QK-norm's
    "  - ReLU^2 (GELU)": (MODERN, ["model.mlp=gelu", "model.mlp_hidden=null"]),
    "  - untied head (tied)": (MODERN, ["model.tie_embeddings=true"]),
    "  - zero-init projections": (MODERN, ["model.zero_init_proj=false"]),
    "  - logit soft-cap 30": (MODERN, ["model.logit_softcap=null"]),
    "  - QK-norm's q gain 2 (1)": (MODERN, ["model.q_norm_gain=1.0"]),
    "  - token smear": (MODERN, ["model.smear=false"]),
    "  - embedding skip (x0)": (MODERN, ["model.x0_skip=false"]),
    "  - NorMuon's neuron norm": (MODERN, ["optimizer.neuron_norm=false"]),
    "  - AOL, 3 iterations (Frobenius, 5)": (MODERN, ["optimizer.ns_precondition=frobenius", "optimizer.ns_steps=5"]),
    "  - Muon (AdamW lr 2e-3, same schedule)": (
        MODERN,
        ["optimizer=adamw", "optimizer.lr=2e-3", "optimizer.min_lr=0", "optimizer.schedule=wsd"],
    ),
    "nanoGPT recipe (GPT-2 layout, AdamW, cosine)": (NANOGPT, []),
    "  + Muon (wsd schedule)": (MODERN, GPT2_ARCH),
    "  + RoPE, RMSNorm (AdamW)": (NANOGPT, ["model.position=rope", "model.norm=rmsnorm"]),
}


def run(preset: str, seed: int, data: str, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            [
                f"experiment={preset}",
                f"data.path={data}",
                f"paths.root_dir={tmp}",
                f"paths.output_dir={tmp}/run",
                f"seed={seed}",
                "trainer.enable_progress_bar=false",
                "callbacks.samples=null",
                *overrides,
            ],
        )
        start = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - start
        model, _ = load_checkpoint(Path(result["last_ckpt"]))
        cache = prepare_token_cache(cfg.data, cfg.tokenizer)
        val = torch.from_numpy(np.asarray(cache.tokens("val")).astype(np.int64))
        full = evaluate(model, val, cfg.data.batch_size, draws=0)["full"]
    return {"loss": full, "params": model.num_params(), "tokens_per_sec": result["tokens_per_sec"] or 0, "wall": wall}


def show(name: str, r: dict) -> None:
    rate = f"{r['tokens_per_sec']:8,.0f} tok/s"
    print(f"  {name:46s} {r['loss']:.4f}  {r['params'] / 1e6:.3f}M  {rate}  {r['wall']:6.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1, 2])
    parser.add_argument("--table", action="store_true", help="also the switch-by-switch table")
    parser.add_argument("--table-steps", type=int, default=1000)
    parser.add_argument("--table-seed", type=int, default=1337)
    parser.add_argument("--table-rows", nargs="+", default=[], help="only table rows whose names contain one")
    parser.add_argument("--skip-presets", action="store_true", help="only the table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the modern preset's runs")
    args = parser.parse_args()
    if not args.skip_presets:
        losses: dict[str, list[float]] = {NANOGPT: [], MODERN: []}
        print("full-split val loss, parameters, tokens/s while training, wall time")
        for seed in args.seeds:
            for preset in (NANOGPT, MODERN):
                r = run(preset, seed, args.data, args.overrides if preset == MODERN else [])
                losses[preset].append(r["loss"])
                show(f"{preset}, seed {seed}", r)
        means = {k: statistics.fmean(v) for k, v in losses.items()}
        print(f"\nmean over seeds {args.seeds}:")
        for preset, mean in means.items():
            print(f"  {preset:30s} {mean:.4f}  ({' '.join(f'{x:.4f}' for x in losses[preset])})")
        print(f"  difference (nanoGPT - modern)  {means[NANOGPT] - means[MODERN]:.4f} nats")
    if args.table:
        steps = [f"trainer.max_steps={args.table_steps}", "optimizer.decay_steps=null"]
        steps.append(f"trainer.val_check_interval={args.table_steps}")
        print(f"\neach part's effect: {args.table_steps} steps, seed {args.table_seed}, full-split val loss")
        for name, (preset, overrides) in TABLE.items():
            if not args.table_rows or any(word in name for word in args.table_rows):
                show(name, run(preset, args.table_seed, args.data, [*steps, *overrides]))


if __name__ == "__main__":
    main()
