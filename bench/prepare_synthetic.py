"""Peak memory and wall time of `python prepare.py` on a synthetic corpus (1 GB by default).

    flock /tmp/fragment_bench.lock python bench/prepare_synthetic.py [--mb 1024] [--vocab 8192]

The corpus (.jsonl shards of unique documents, see synthetic_corpus.py) is written to a temporary
directory and deleted afterwards, with the token cache. `prepare.py` runs as a user runs it (default
settings: tokenizer trained on 20M sampled characters, one encoder process per CPU) while its process
tree is polled every 0.2 s for the sum of RSS (shared pages counted in every process) and of PSS
(shared pages divided among the processes that share them). "Pure encode" is tiktoken's
`encode_ordinary_batch` on the same texts with the tokenizer prepare trained, the encode calls alone
timed (JSON parsing excluded), and, as the ideal on this machine, one process per CPU each encoding its
share of the files with `encode_to_numpy` (no Python lists), the slowest one's encode time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from synthetic_corpus import REPO, iter_texts, parallel_encode_seconds, write_corpus

sys.path.insert(0, str(REPO))

from fragment_llm.data.encoding import default_workers  # noqa: E402
from fragment_llm.data.tokenizer import load_tokenizer  # noqa: E402


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    return pids


def _memory_kb(pid: int) -> tuple[int, int]:
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


class TreeMonitor(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_rss, self.peak_pss, self.stop = pid, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            sums = [sum(x) for x in zip(*(_memory_kb(p) for p in _tree(self.pid)), strict=True)] or [0, 0]
            self.peak_rss, self.peak_pss = max(self.peak_rss, sums[0]), max(self.peak_pss, sums[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=1024.0)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fragment_bench_prep_", dir=args.tmp, ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        t0 = time.perf_counter()
        paths = write_corpus(tmp / "corpus", args.mb, shards=8)
        size = sum(p.stat().st_size for p in paths) / 1e6
        print(f"corpus: {size:,.0f} MB in {len(paths)} .jsonl files, written in {time.perf_counter() - t0:.0f} s")

        cmd = [sys.executable, str(REPO / "prepare.py"), "data=text", f"data.path={tmp / 'corpus'}",
               f"tokenizer.vocab_size={args.vocab}", f"paths.root_dir={tmp}"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        monitor = TreeMonitor(proc.pid)
        monitor.start()
        out, _ = proc.communicate()
        wall = time.perf_counter() - t0
        monitor.stop.set()
        if proc.returncode != 0:
            sys.exit(out[-3000:])
        cache = next((tmp / "outputs" / ".data_cache").iterdir())
        report = json.loads((cache / "prepare_report.json").read_text())

        enc = load_tokenizer(cache / "tokenizer.json")._fast
        pure, batch, mb = 0.0, [], 0.0
        for text in iter_texts(paths):
            batch.append(text)
            mb += len(text.encode()) / 1e6
            if len(batch) == 1000:
                t1 = time.perf_counter()
                enc.encode_ordinary_batch(batch)
                pure += time.perf_counter() - t1
                batch = []
        t1 = time.perf_counter()
        enc.encode_ordinary_batch(batch)
        pure += time.perf_counter() - t1

        cpus = default_workers()
        ideal = parallel_encode_seconds(paths, cache / "tokenizer.json", cpus)

        secs = {k: round(v, 1) for k, v in report["seconds"].items()}
        print(f"prepare.py wall time:   {wall:7.1f} s   (stages: {secs})")
        rss, pss = monitor.peak_rss / 1024, monitor.peak_pss / 1024
        print(f"peak memory, all processes: RSS {rss:,.0f} MB, PSS {pss:,.0f} MB")
        for name, t in (("tiktoken encode_ordinary_batch", pure), (f"{cpus} processes, encode_to_numpy", ideal)):
            print(f"pure encode, {name}: {t:6.1f} s ({mb / t:.1f} MB/s); prepare wall / it: {wall / t:.2f}x")
        print(f"tokens: {report['tokens']}, documents kept: {report['documents_kept']}")


if __name__ == "__main__":
    main()
