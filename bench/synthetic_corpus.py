"""A synthetic corpus of any size, streamed to disk: FineWeb-like .jsonl shards of unique documents.

Documents are random runs of lines of tiny-shakespeare (or of generated prose where it is absent),
each headed by its own number, so none is a duplicate and the text has the statistics of real prose.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import corpus_text  # noqa: E402


def write_corpus(directory: Path, total_mb: float, shards: int = 8, seed: int = 0) -> list[Path]:
    """Write about `total_mb` MB of documents as `shards` .jsonl files under `directory`."""
    rng = random.Random(seed)
    lines = [line for line in corpus_text(2_000_000).splitlines() if line.strip()]
    directory.mkdir(parents=True, exist_ok=True)
    per_shard = total_mb * 1e6 / shards
    paths, doc = [], 0
    for s in range(shards):
        path = directory / f"shard_{s:03d}.jsonl"
        written = 0
        with open(path, "w", encoding="utf-8") as f:
            while written < per_shard:
                start = rng.randrange(len(lines) - 120)
                body = "\n".join(lines[start : start + rng.randint(20, 120)])
                line = json.dumps({"id": doc, "text": f"Document {doc}.\n{body}"}, ensure_ascii=False) + "\n"
                f.write(line)
                written += len(line)
                doc += 1
        paths.append(path)
    return paths


def iter_texts(paths: list[Path]):
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]


def _encode_files(args: tuple[str, list[Path]]) -> tuple[float, int]:
    """Seconds spent in tiktoken's encode_to_numpy (and tokens made) over the texts of some files."""
    import time

    from fragment_llm.data.tokenizer import load_tokenizer

    enc = load_tokenizer(args[0])._fast
    seconds = tokens = 0
    for text in iter_texts(args[1]):
        t0 = time.perf_counter()
        tokens += enc.encode_to_numpy(text, disallowed_special=()).size
        seconds += time.perf_counter() - t0
    return seconds, tokens


def parallel_encode_seconds(paths: list[Path], tokenizer_path: Path, processes: int) -> float:
    """The pure encode time of these files on `processes` cores: each process encodes its share of the
    files (reading and JSON parsing not timed); the slowest one's encode time."""
    import multiprocessing as mp

    shares = [(str(tokenizer_path), paths[i::processes]) for i in range(processes)]
    with mp.get_context("spawn").Pool(processes) as pool:
        return max(seconds for seconds, _ in pool.map(_encode_files, shares))
