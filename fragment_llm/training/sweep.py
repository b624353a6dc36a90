"""Sweeps (`python train.py -m ...`): each job records its result; the sweep directory gets a summary.

Every run writes `result.json` into its directory (best val/loss, steps, status). After the
last job, the `SweepSummary` Hydra callback (see conf/hydra/default.yaml) gathers them into
`summary.csv` in the sweep directory, best first, and logs the table. Reading the files
rather than collecting return values works with any Hydra launcher, local or remote.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fragment_llm.training.checkpoint_io import atomic_write

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.csv"
COLUMNS = ("job", "best_val_loss", "val_loss", "val_bpb", "steps", "status", "overrides", "run_dir")


def write_job_result(run_dir: Path, record: dict[str, Any]) -> None:
    text = json.dumps(record, indent=1, default=str)
    atomic_write(run_dir / RESULT_FILE, lambda f: f.write(text.encode()))


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """Rows for every job directory with a result, lowest best val/loss first (failures last)."""
    rows = []
    for path in sorted(sweep_dir.glob(f"*/{RESULT_FILE}")):
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("Sweep summary: skipping %s (%s)", path, e)
    best = [r.get("best_val_loss") for r in rows]
    order = sorted(range(len(rows)), key=lambda i: best[i] if _is_number(best[i]) else math.inf)
    return [rows[i] for i in order]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "overrides": " ".join(row.get("overrides") or [])})
    return out.getvalue()


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write `summary.csv` in the sweep directory and log it."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        rows = summarize(sweep_dir)
        if not rows:
            return
        atomic_write(sweep_dir / SUMMARY_FILE, lambda f: f.write(_csv(rows).encode()))
        lines = [f"Sweep summary ({len(rows)} jobs, best val/loss first): {sweep_dir / SUMMARY_FILE}"]
        for row in rows:
            loss = row.get("best_val_loss")
            shown = f"{loss:.4f}" if _is_number(loss) else "   -  "
            lines.append(f"  {shown}  {Path(str(row.get('run_dir'))).name}  {row.get('status')}")
        log.info("\n".join(lines))
        failed = sum(row.get("status") != "ok" for row in rows)
        if failed:
            log.warning("%d of %d sweep jobs failed; see their status in %s", failed, len(rows), SUMMARY_FILE)
