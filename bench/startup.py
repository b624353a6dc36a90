"""Start-up: `python train.py` to its first training step, `python generate.py` to its first token, and
what prepare.py's encoder processes hold in memory.

    python bench/startup.py [--repeats 3] [--repo PATH]     # --repo: another checkout, for before/after

Each figure is the median of --repeats runs of the real command in a fresh process, timed from the
parent: a line or a byte is stamped when it arrives. generate.py samples unconditionally (no prompt)
from a checkpoint of the default model (conf/model/default.yaml, BPE 2048), trained for a few steps
(speed does not depend on the weights), and its first byte on stdout is the first token. train.py runs
the default model on tiny-shakespeare with its token cache already built; its log line "First
training step done" ends start-up (an older checkout without that line: its "Initial val/loss" line,
which comes before the first step). prepare.py encodes a synthetic 24 MB corpus with 2 encoder
processes; their resident memory (VmRSS) is sampled every 50 ms and the largest is reported, next to
what importing torch alone costs a process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from synthetic_corpus import write_corpus

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo)}


def _time_until(cmd: list[str], repo: Path, marks: tuple[str, ...], first_byte: bool = False) -> tuple[float, float]:
    """(seconds until a mark appears, or the first stdout byte; seconds until exit)."""
    start = time.perf_counter()
    stderr = subprocess.DEVNULL if first_byte else subprocess.STDOUT
    proc = subprocess.Popen(cmd, cwd=repo, env=_env(repo), stdout=subprocess.PIPE, stderr=stderr)
    seen = None
    if first_byte:
        if proc.stdout.read(1):
            seen = time.perf_counter() - start
        proc.stdout.read()
    else:
        for line in proc.stdout:
            if seen is None and any(m.encode() in line for m in marks):
                seen = time.perf_counter() - start
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return seen if seen is not None else float("nan"), time.perf_counter() - start


def _train_cmd(root: Path, run: str, extra: list[str]) -> list[str]:
    return [sys.executable, "train.py", "data=text", f"data.path={DATA}", f"paths.root_dir={root}",
            f"hydra.run.dir={root}/{run}", *extra]  # fmt: skip


def first_step(repo: Path, root: Path, repeats: int) -> tuple[list[float], list[float]]:
    extra = ["trainer.max_steps=2", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]
    firsts, walls = [], []
    for i in range(repeats):
        seen, wall = _time_until(_train_cmd(root, f"step{i}", extra), repo, ("First training step", "Initial val/loss"))
        firsts.append(seen)
        walls.append(wall)
    return firsts, walls


def first_token(repo: Path, ckpt: Path, repeats: int) -> tuple[list[float], list[float]]:
    cmd = [sys.executable, "generate.py", f"ckpt={ckpt}", "max_new_tokens=20", "seed=0", "stop_at_eot=false"]
    runs = [_time_until(cmd, repo, (), first_byte=True) for _ in range(repeats)]
    return [r[0] for r in runs], [r[1] for r in runs]


def _vmrss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def encoder_rss(repo: Path, tmp: Path) -> tuple[int, int, float]:
    """(largest encoder-process VmRSS in KB, prepare.py's own, wall seconds) for a 24 MB corpus, 2 workers."""
    corpus = write_corpus(tmp / "corpus", 24, shards=4)[0].parent
    cmd = [sys.executable, "prepare.py", "data=text", f"data.path={corpus}", "data.prepare_workers=2",
           f"paths.root_dir={tmp}", f"hydra.run.dir={tmp}/prep", "tokenizer.vocab_size=1024"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=repo, env=_env(repo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peaks = {"main": 0, "worker": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peaks["main"] = max(peaks["main"], _vmrss_kb(proc.pid))
            try:
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            except OSError:
                children = []
            for child in children:
                peaks["worker"] = max(peaks["worker"], _vmrss_kb(int(child)))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    proc.wait()
    done.set()
    thread.join()
    return peaks["worker"], peaks["main"], time.perf_counter() - start


def torch_import_rss() -> int:
    code = "import torch, pathlib; print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines()"
    code += " if l.startswith('VmRSS')][0].split()[1])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout to time (default: this one)")
    args = parser.parse_args()
    repo = args.repo.resolve()
    print(f"checkout {repo}; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="startup-") as name:
        tmp = Path(name)
        # The default model with the default BPE tokenizer; its token cache and checkpoint, built untimed.
        subprocess.run(_train_cmd(tmp, "ckpt", ["trainer.max_steps=3", "trainer.enable_progress_bar=false"]),
                       cwd=repo, env=_env(repo), check=True, capture_output=True)  # fmt: skip
        ckpt = tmp / "ckpt" / "checkpoints" / "last.ckpt"

        firsts, walls = first_step(repo, tmp, args.repeats)
        runs = ", ".join(f"{s:.2f}" for s in firsts)
        print(f"train.py -> first training step: median {statistics.median(firsts):.2f} s ({runs}); "
              f"whole 2-step run {statistics.median(walls):.2f} s")  # fmt: skip
        firsts, walls = first_token(repo, ckpt, args.repeats)
        runs = ", ".join(f"{s:.2f}" for s in firsts)
        print(f"generate.py -> first token: median {statistics.median(firsts):.2f} s ({runs}); "
              f"whole run (20 tokens) {statistics.median(walls):.2f} s")  # fmt: skip
        worker, main_rss, wall = encoder_rss(repo, tmp)
        print(f"prepare.py (24 MB, 2 encoder processes, {wall:.1f} s): encoder process VmRSS up to "
              f"{worker / 1024:.0f} MB, prepare.py's own {main_rss / 1024:.0f} MB; "
              f"a Python process that imports torch: {torch_import_rss() / 1024:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
