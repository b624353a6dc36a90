"""fp32 vs bf16-mixed training speed on this CPU, and what `trainer.precision=auto` picks, for two model sizes.

    python bench/precision_cpu.py [--rounds 2] [--steps 12] [--presets shakespeare_char_cpu shakespeare_char]
        [override ...]

For each preset (shakespeare_char_cpu: 0.8M parameters, 128 wide; shakespeare_char: 10.6M, 384 wide,
batch 64 x 256) `python train.py experiment=<preset>` runs --steps steps with trainer.precision=32-true,
bf16-mixed and auto, alternating, --rounds times; validation, samples and torch.compile off (a short run
would time the compilation). Throughput is the median of the logged 2-step windows after the first
(train/tokens_per_sec); the table gives the median over rounds, bf16 / fp32, and auto's choice with the
reason it logged. Extra arguments are Hydra overrides for every run (e.g. `data.batch_size=4`: where bf16
is emulated, a 64 x 256 batch takes minutes per step). The rule in fragment_llm/precision.py rests on these
figures (with AMX: the issue's).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from race_nanogpt import REPO, machine

DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
PRECISIONS = ("32-true", "bf16-mixed", "auto")


def run(preset: str, precision: str, steps: int, root: Path, overrides: list[str]) -> tuple[float, str]:
    """(median tokens/s over the 2-step windows after the first, the precision line of the log)."""
    run_dir = Path(tempfile.mkdtemp(dir=root, prefix="run-"))
    run_dir.rmdir()
    args = [sys.executable, "train.py", f"experiment={preset}", f"data.path={DATA}", f"paths.root_dir={root}",
            f"hydra.run.dir={run_dir}", f"trainer.max_steps={steps}", "trainer.log_every_n_steps=2",
            "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "callbacks.samples=null",
            "model.compile=false", "trainer.enable_progress_bar=false", f"trainer.precision={precision}",
            *overrides]  # fmt: skip
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    chosen = re.search(r"Precision: (.*)", out.stdout + out.stderr)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    rates = [e.value for e in acc.Scalars("train/tokens_per_sec")][1:]
    return statistics.median(rates), chosen.group(1) if chosen else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--presets", nargs="+", default=["shakespeare_char_cpu", "shakespeare_char"])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory(prefix="precision-") as tmp:
        for preset in args.presets:
            rates: dict[str, list[float]] = {p: [] for p in PRECISIONS}
            reason = ""
            for r in range(args.rounds):
                for precision in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
                    rate, chosen = run(preset, precision, args.steps, Path(tmp), args.overrides)
                    rates[precision].append(rate)
                    reason = chosen if precision == "auto" else reason
                    print(f"  {preset} round {r + 1} {precision:10s} {rate:9,.0f} tokens/s", flush=True)
            med = {p: statistics.median(v) for p, v in rates.items()}
            print(
                f"{preset}: fp32 {med['32-true']:,.0f}, bf16-mixed {med['bf16-mixed']:,.0f} tokens/s "
                f"(bf16 / fp32 {med['bf16-mixed'] / med['32-true']:.2f}x); auto {med['auto']:,.0f} "
                f"= {reason}; auto / best {med['auto'] / max(med['32-true'], med['bf16-mixed']):.2f}x"
            )


if __name__ == "__main__":
    main()
