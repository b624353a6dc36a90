"""Training throughput with 1 and 2 CPU processes (DDP over gloo) on the same tiny run.

    python bench/ddp_scaling.py [--data ../shared/data/tinyshakespeare.txt] [--steps 200] [override ...]

Each configuration runs `train.py` in a subprocess, as a user would. On a 2-core machine each of the 2
processes gets one core, so the figure shows DDP's overhead more than its speed-up; on a real multi-core
or multi-GPU machine the same command shows the scaling.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(devices: int, data: str, steps: int, batch_size: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, str(REPO / "train.py"), "trainer=ddp_cpu", f"trainer.devices={devices}",
            "experiment=shakespeare_char_cpu", f"data.path={data}", f"data.batch_size={batch_size}",
            f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}", "trainer.limit_val_batches=20",
            "trainer.enable_progress_bar=true", "callbacks.model_checkpoint=null", *overrides,
        ]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"devices={devices} failed:\n{proc.stderr[-3000:]}")
    tokens_per_sec = float(re.findall(r"Training throughput: ([\d,]+) tokens/s", proc.stderr)[-1].replace(",", ""))
    val_loss = float(re.findall(r"val/loss [\d.]+ -> ([\d.]+)", proc.stderr)[-1])
    return {"tokens_per_sec": tokens_per_sec, "wall": wall, "val_loss": val_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=12, help="per process")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(f"shakespeare_char_cpu model, block 64, {args.steps} steps, batch {args.batch_size} per process, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'processes':>9} {'effective batch':>15} {'tokens/s':>10} {'wall s':>7} {'val loss':>8}")
    for devices in (1, 2):
        r = run(devices, args.data, args.steps, args.batch_size, args.overrides)
        print(f"{devices:>9} {args.batch_size * devices:>15} {r['tokens_per_sec']:>10,.0f} {r['wall']:>7.1f} "
              f"{r['val_loss']:>8.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
