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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=None, help="prepare's encoder processes (default: one per CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="fragment_bench_enc_"))
    try:
        paths = write_corpus(tmp / "corpus", args.mb, shards=4)
        sample = [t for _, t in zip(range(3000), iter_texts(paths), strict=False)]
        BPETokenizer.train(sample, args.vocab, 2).save(tmp / "tokenizer.json")

        cache = prepare_token_cache(
            {
                "path": str(tmp / "corpus"),
                "cache_dir": str(tmp / "cache"),
                "extensions": [".jsonl"],
                "prepare_workers": args.workers,
            },
            {"path": str(tmp / "tokenizer.json")},
        )
        report = json.loads((cache.directory / "prepare_report.json").read_text())
        mb_in, ours = report["bytes_in"] / 1e6, report["seconds"]["encode"]

        enc = load_tokenizer(tmp / "tokenizer.json")._fast
        texts = list(iter_texts(paths))
        mb_texts = sum(len(t.encode()) for t in texts) / 1e6
        raw, n_tokens = 0.0, 0
        for start in range(0, len(texts), 1000):
            batch = texts[start : start + 1000]
            t0 = time.perf_counter()
            n_tokens += sum(map(len, enc.encode_ordinary_batch(batch)))
            raw += time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in texts[:2000]:
            enc.encode_ordinary(t)
        single_mb_s = sum(len(t.encode()) for t in texts[:2000]) / 1e6 / (time.perf_counter() - t0)

        cpus = default_workers()
        ideal = parallel_encode_seconds(paths, tmp / "tokenizer.json", cpus)
        ours_tokens = sum(report["tokens"].values())
        print(f"corpus: {mb_texts:.1f} MB of text, {len(texts):,} documents; vocab {args.vocab}; {cpus} CPUs")
        print(f"prepare, encode stage ({report['encode_workers']} workers): {ours:6.1f} s  {mb_in / ours:6.2f} MB/s"
              f"  {ours_tokens / ours:,.0f} tokens/s")  # fmt: skip
        print(f"tiktoken encode_ordinary_batch:        {raw:6.1f} s  {mb_texts / raw:6.2f} MB/s"
              f"  {n_tokens / raw:,.0f} tokens/s")  # fmt: skip
        print(f"ratio (prepare / raw tiktoken):        {(mb_in / ours) / (mb_texts / raw):.2f}x")
        print(f"pure encode, {cpus} processes encode_to_numpy: {ideal:6.1f} s  {mb_texts / ideal:6.2f} MB/s"
              f"  (prepare reaches {(mb_in / ours) / (mb_texts / ideal):.2f}x of it)")  # fmt: skip
        print(f"(tiktoken encode_ordinary, 1 thread:   {single_mb_s:.2f} MB/s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
