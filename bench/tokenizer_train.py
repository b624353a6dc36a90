"""Tokenizer training speed: Fragment_LLM's BPE training versus calling `tokenizers` directly.

    flock /tmp/fragment_bench.lock python bench/tokenizer_train.py [--mb 20] [--vocab 8192]

Both train on the same documents (a synthetic corpus, see synthetic_corpus.py) with the same
configuration (GPT-4 split pattern + byte-level BPE, `min_frequency` 2). A third figure is the whole
tokenizer stage of `prepare` on a file holding exactly that text: sampling (read + clean) + training +
checking tiktoken against `tokenizers`.
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

from synthetic_corpus import REPO, iter_texts, write_corpus

sys.path.insert(0, str(REPO))

from fragment_llm.data import fast_bpe  # noqa: E402
from fragment_llm.data.pipeline import prepare_token_cache  # noqa: E402
from fragment_llm.data.tokenizer import EOT_TOKEN, BPETokenizer  # noqa: E402


def train_directly(texts: list[str], vocab: int) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(fast_bpe.SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        min_frequency=2,
        special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)


def tokenizer_stage(tmp: Path, vocab: int) -> float:
    """Seconds of prepare's tokenizer stage on corpus.txt, with a budget that takes all of it."""
    shutil.rmtree(tmp / "cache", ignore_errors=True)
    cache = prepare_token_cache(
        {"path": str(tmp / "corpus.txt"), "cache_dir": str(tmp / "cache"), "prepare_workers": 1},
        {"vocab_size": vocab, "train_chars": 10**12},
    )
    return json.loads((cache.directory / "prepare_report.json").read_text())["seconds"]["tokenizer"]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=20.0, help="MB of text to train on")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="fragment_bench_tok_", ignore_cleanup_errors=True) as name:
        tmp = Path(name)
        paths = write_corpus(tmp / "corpus", args.mb, shards=1)
        texts = list(iter_texts(paths))
        mb = sum(len(t.encode()) for t in texts) / 1e6
        (tmp / "corpus.txt").write_text(("\n\n".join(texts)), encoding="utf-8")
        # Interleaved, best of `runs` each: the machine is shared, so a slow run is noise, not signal.
        times: dict[str, list[float]] = {"direct": [], "ours": [], "stage": []}
        for _ in range(args.runs):
            times["direct"].append(timed(lambda: train_directly(texts, args.vocab)))
            times["ours"].append(timed(lambda: BPETokenizer.train(texts, args.vocab, 2)))
            times["stage"].append(tokenizer_stage(tmp, args.vocab))
        direct, ours, stage = (min(times[k]) for k in ("direct", "ours", "stage"))
        print(f"text: {mb:.1f} MB ({len(texts):,} documents), vocab {args.vocab}")
        print(f"tokenizers, called directly:       {direct:6.2f} s  {mb / direct:6.2f} MB/s")
        print(f"BPETokenizer.train:                {ours:6.2f} s  {mb / ours:6.2f} MB/s  ({direct / ours:.2f}x)")
        print(f"prepare's tokenizer stage (all):   {stage:6.2f} s  {mb / stage:6.2f} MB/s  ({direct / stage:.2f}x)")


if __name__ == "__main__":
    main()
