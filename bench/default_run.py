"""The default run (`python train.py`, the stdlib corpus) against a candidate recipe, at the same wall time.

    python bench/default_run.py [--rounds 1] [--baseline OVERRIDE ...] --candidate OVERRIDE ... [--quick]

Each round runs `python train.py <baseline overrides>` and `python train.py <candidate overrides>` as a
user does (fresh processes, the order alternating between rounds) and prints, for each, the whole
process's wall time, the training tokens/s, the final val loss and val bits per byte (the whole val
split; bits per byte compares runs whatever their tokenizer), and the candidate's bits per byte relative
to the baseline's. `--match-wall` gives the candidate the steps that make its wall time match: both
models' training steps (forward, backward, optimizer) are timed first on random batches of the run's shape,
and the candidate trains `baseline steps x baseline step time / candidate step time` steps. The token
cache is built once before the first round, outside the timings.
`--quick` (a smoke test): 30 steps each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from race_nanogpt import machine  # noqa: E402


def run(overrides: list[str], root: Path) -> dict:
    run_dir = Path(tempfile.mkdtemp(dir=root, prefix="run-"))
    run_dir.rmdir()  # train.py refuses a directory that exists; it creates this one
    args = [sys.executable, "train.py", f"paths.root_dir={root}", f"hydra.run.dir={run_dir}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    result = json.loads((run_dir / "result.json").read_text())
    return {**result, "wall": wall, "load": os.getloadavg()[0]}


def step_seconds(overrides: list[str], steps: int = 15) -> tuple[float, int]:
    """Seconds per training step of the composed config's model and optimizer, and its max_steps."""
    import torch
    from hydra import compose, initialize_config_dir

    sys.path.insert(0, str(REPO))
    from fragment_llm.model.gpt import GPT, GPTConfig
    from fragment_llm.model.optimizers import build_optimizer

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", [*overrides, "paths.output_dir=unused"])
    model_keys = {f for f in GPTConfig.__dataclass_fields__ if f != "vocab_size"}
    config = GPTConfig(vocab_size=cfg.tokenizer.vocab_size, **{k: v for k, v in cfg.model.items() if k in model_keys})
    torch.manual_seed(0)
    model = GPT(config)
    opt, _ = build_optimizer(model, dict(cfg.optimizer), cfg.trainer.max_steps)
    idx = torch.randint(0, config.vocab_size, (cfg.data.batch_size, config.block_size + 1))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        _, loss = model(idx[:, :-1], idx[:, 1:].contiguous())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:]), cfg.trainer.max_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", nargs="*", default=[], help="overrides of today's default run (none)")
    parser.add_argument("--candidate", nargs="+", required=True, help="overrides of the candidate recipe")
    parser.add_argument("--match-wall", action="store_true", help="candidate steps for the baseline's wall time")
    parser.add_argument("--quick", action="store_true", help="30 steps each: a smoke test of the script")
    args = parser.parse_args()
    print(machine())
    quick = ["trainer.max_steps=30", "trainer.val_check_interval=30"] if args.quick else []
    contenders = {"baseline": [*args.baseline, *quick], "candidate": [*args.candidate, *quick]}
    if args.match_wall:
        base_s, base_steps = step_seconds(contenders["baseline"])
        cand_s, _ = step_seconds(contenders["candidate"])
        steps = round(base_steps * base_s / cand_s)
        print(f"training step: baseline {1000 * base_s:.1f} ms, candidate {1000 * cand_s:.1f} ms "
              f"-> candidate trains {steps} steps (baseline {base_steps})")  # fmt: skip
        contenders["candidate"].append(f"trainer.max_steps={steps}")

    results: dict[str, list[dict]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="default-run-") as tmp:
        root = Path(tmp)
        prepare = [sys.executable, "prepare.py", f"paths.root_dir={root}", f"hydra.run.dir={root}/prepare"]
        subprocess.run(prepare, cwd=REPO, capture_output=True, text=True, check=True)
        for r in range(args.rounds):
            names = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for name in names:
                res = run(contenders[name], root)
                results[name].append(res)
                print(
                    f"round {r + 1}, {name:9s} wall {res['wall']:6.1f} s, {res['steps']} steps, "
                    f"{res['tokens_per_sec'] or 0:,.0f} tokens/s, val loss {res['val_loss']:.4f}, "
                    f"val bpb {res['val_bpb']:.4f} (load average {res['load']:.1f})",
                    flush=True,
                )
    med = {n: {k: statistics.median(r[k] for r in rows) for k in ("wall", "val_bpb")} for n, rows in results.items()}
    base, cand = med["baseline"], med["candidate"]
    print(f"\nbaseline:  {' '.join(contenders['baseline']) or '(python train.py)'}")
    print(f"candidate: {' '.join(contenders['candidate'])}")
    print(
        f"candidate / baseline: wall time {cand['wall'] / base['wall']:.2f}x, val bits per byte "
        f"{cand['val_bpb']:.4f} vs {base['val_bpb']:.4f} ({100 * (cand['val_bpb'] / base['val_bpb'] - 1):+.1f} %; "
        "target <= -10 % at the same wall time)"
    )


if __name__ == "__main__":
    main()
