"""Encoding speed of the whole prepare path versus raw `tiktoken` on the same merges.

    flock /tmp/fragment_bench.lock python bench/encode_throughput.py [--mb 100] [--vocab 8192]

A synthetic .jsonl corpus (see synthetic_corpus.py) is encoded twice with one tokenizer:
- by `prepare` (read, parse JSON, clean, hash for dedup, encode in worker processes, write shards),
  timed by its own report (the encode stage; the tokenizer is given, not trained);
- by `tiktoken.Encoding.encode_ordinary_batch` on the same texts already in memory (its default
  8 threads), the encode calls alone timed;
- by one process per CPU, each encoding its share of the files with `encode_to_numpy`, the encode
  calls alone timed (the slowest process): the ideal parallel encode on this machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from synthetic_corpus import REPO, iter_texts, parallel_encode_seconds, write_corpus

sys.path.insert(0, str(REPO))

from fragment_llm.data.encoding import default_workers  # noqa: E402
from fragment_llm.data.pipeline import prepare_token_cache  # noqa: E402
from fragment_llm.data.tokenizer import BPETokenizer, load_tokenizer  # noqa: E402


def prepare_encode(tmp: Path, run: int, workers: int | None) -> dict:
    """prepare's report on the corpus, the tokenizer given (so that the encode stage is what is timed)."""
    cache = prepare_token_cache(
        {
            "path": str(tmp / "corpus"),
            "cache_dir": str(tmp / f"cache{run}"),
            "extensions": [".jsonl"],
            "prepare_workers": workers,
        },
        {"path": str(tmp / "tokenizer.json")},
    )
    report = json.loads((cache.directory / "prepare_report.json").read_text())
    shutil.rmtree(cache.directory)
    return report


def batch_encode_seconds(enc, texts: list[str]) -> float:
    seconds = 0.0
    for start in range(0, len(texts), 1000):
        batch = texts[start : start + 1000]
        t0 = time.perf_counter()
        enc.encode_ordinary_batch(batch)
        seconds += time.perf_counter() - t0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=None, help="prepare's encoder processes (default: one per CPU)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="fragment_bench_enc_", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        paths = write_corpus(tmp / "corpus", args.mb, shards=4)
        sample = [t for _, t in zip(range(3000), iter_texts(paths), strict=False)]
        BPETokenizer.train(sample, args.vocab, 2).save(tmp / "tokenizer.json")

        texts = list(iter_texts(paths))
        mb = sum(len(t.encode()) for t in texts) / 1e6
        enc = load_tokenizer(tmp / "tokenizer.json")._fast
        cpus = default_workers()
        # Interleaved, best of `runs` each: the machine is shared, so a slow run is noise, not signal.
        times: dict[str, list[float]] = {"prepare": [], "batch": [], "ideal": []}
        for run in range(args.runs):
            report = prepare_encode(tmp, run, args.workers)
            times["prepare"].append(report["seconds"]["encode"])
            times["batch"].append(batch_encode_seconds(enc, texts))
            times["ideal"].append(parallel_encode_seconds(paths, tmp / "tokenizer.json", cpus))
        ours, batch, ideal = (min(times[k]) for k in ("prepare", "batch", "ideal"))
        t0 = time.perf_counter()
        for t in texts[:2000]:
            enc.encode_ordinary(t)
        single = sum(len(t.encode()) for t in texts[:2000]) / 1e6 / (time.perf_counter() - t0)

        print(f"corpus: {mb:.1f} MB of text, {len(texts):,} documents; vocab {args.vocab}; {cpus} CPUs")
        print(f"best of {args.runs} interleaved runs each:")
        rows = [
            (f"prepare, encode stage ({report['encode_workers']} workers)", ours),
            ("tiktoken encode_ordinary_batch (8 threads)", batch),
            (f"{cpus} processes, tiktoken encode_to_numpy", ideal),
        ]
        for name, secs in rows:
            print(f"{name:45s} {secs:6.1f} s  {mb / secs:6.2f} MB/s  (prepare's speed / this: {secs / ours:.2f}x)")
        print(f"(tiktoken encode_ordinary, 1 thread: {single:.2f} MB/s)")


if __name__ == "__main__":
    main()
