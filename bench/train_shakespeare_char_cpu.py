"""Train nanoGPT's shakespeare_char CPU recipe end to end and print loss, throughput and wall time.

    python bench/train_shakespeare_char_cpu.py [--data ../shared/data/tinyshakespeare.txt] [override ...]

Extra arguments are Hydra overrides (e.g. `trainer.max_steps=500`). nanoGPT reports val loss 1.88 at
step 2000 for this recipe.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fragment_llm.training.run import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare.txt"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "experiment=shakespeare_char_cpu",
                f"data.path={args.data}",
                f"paths.root_dir={tmp}",
                f"paths.output_dir={tmp}/run",
                *args.overrides,
            ],
        )
        start = time.perf_counter()
        result = train(cfg)
        wall = time.perf_counter() - start
    steps = result["global_step"]
    tokens = steps * cfg.data.batch_size * cfg.model.block_size * cfg.trainer.accumulate_grad_batches
    print(f"torch threads      {os.environ.get('OMP_NUM_THREADS', 'default')}, cpus {os.cpu_count()}")
    print(f"steps              {steps}")
    print(f"final val loss     {result['val_loss']:.4f}  (full val split; nanoGPT reports 1.88)")
    print(f"best val loss      {result['best_val_loss']:.4f}")
    print(f"train tokens/s     {tokens / wall:,.0f} over the whole wall time")
    print(f"                   {result['tokens_per_sec'] or 0:,.0f} while training (validation excluded)")
    print(f"wall time          {wall:.1f} s (data prep, validation and checkpoints included)")


if __name__ == "__main__":
    main()
