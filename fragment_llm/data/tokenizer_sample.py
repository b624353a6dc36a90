"""Text for tokenizer training: a budget of characters sampled evenly across the corpus.

A big corpus does not need all of its text to learn merges from. Each source gets a share
of `tokenizer.train_chars` proportional to its size: a file within its share is read whole,
a bigger one as evenly spaced windows (cut at safe points), a .gz one from its start (it
cannot seek), a .parquet one from evenly spaced row groups. The text is cleaned exactly as
for encoding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

from tqdm.auto import tqdm

from fragment_llm.data.cleaning import CleaningCounts, CleaningRules, clean_bytes, clean_text
from fragment_llm.data.readers import PIECE_BYTES, SourceError, iter_items, parquet_file, safe_cut, split_at_safe_cuts
from fragment_llm.data.sources import JSONL, PARQUET, TEXT, SourceFile

VERIFY_CHARS = 256 << 10  # sample text on which tiktoken is checked against `tokenizers`
VERIFY_PIECE = 16 << 10


class TokenizerSample:
    """Cleaned text spread across the corpus, `budget` characters at most (None: all of it), as an iterator.

    Each source gets a share of the budget proportional to its size. The first VERIFY_CHARS
    characters are kept to check the fast encoder on. Progress is shown in bytes/s.
    """

    def __init__(self, sources: list[SourceFile], budget: int | None, rules: CleaningRules, text_field: str) -> None:
        self.sources, self.budget, self.rules, self.text_field = sources, budget, rules, text_field
        self.chars = 0
        self.kept: list[str] = []
        self._kept_chars = 0
        total = sum(s.size for s in sources)
        expected = total if budget is None else min(total, budget)
        self.bar = tqdm(total=expected, desc="Tokenizer training", unit="B", unit_scale=True, disable=None)

    def __iter__(self) -> Iterator[str]:
        total = sum(s.size for s in self.sources) or 1
        counts = CleaningCounts()  # not reported: the encoding pass counts everything once
        for src in self.sources:
            share = math.inf if self.budget is None else max(1.0, self.budget * src.size / total)
            taken = 0
            for raw in iter_sample(src, share, self.text_field):
                for text, n in self._cleaned(raw, counts):
                    self.chars, taken = self.chars + len(text), taken + len(text)
                    self.bar.update(n)
                    if self._kept_chars < VERIFY_CHARS:  # the start of many documents, rather than one long one
                        self.kept.append(text[:VERIFY_PIECE])
                        self._kept_chars += len(self.kept[-1])
                    yield text
                if taken >= share:
                    break

    def _cleaned(self, raw: str | bytes, counts: CleaningCounts) -> Iterator[tuple[str, int]]:
        """(cleaned text, raw size) in parts of at most about 64 KB: `tokenizers` trains in parallel over them."""
        if isinstance(raw, str):
            yield clean_text(raw, self.rules, counts), len(raw)
            return
        for part in split_at_safe_cuts(raw, 64 << 10):
            # A BOM is kept: a character vocabulary must cover whatever encoding will see.
            yield clean_bytes(part, self.rules, counts, strip_bom=False), len(part)

    def close(self) -> None:
        self.bar.close()


def iter_sample(src: SourceFile, budget: float, text_field: str) -> Iterator[str | bytes]:
    """About `budget` bytes of the source's text, spread over the file: raw bytes of text, or record strings.

    A file within budget is read whole; a bigger one as evenly spaced windows, or from its start if it
    cannot seek (.gz). The caller stops reading once it has its share. Unreadable parts are left out:
    the encoding pass reports them.
    """
    try:
        if src.format == PARQUET:
            yield from _parquet_sample(src, budget, text_field)
        elif src.size <= budget or src.gzip:
            for item in iter_items(src, 0, 1.0, text_field, math.inf):
                if item.kind == "text":
                    yield item.payload
                elif item.kind == "jsonl":
                    yield from _json_texts(item.payload, text_field)
        else:
            for window in _windows(src, budget):
                if src.format == TEXT:
                    yield window
                else:
                    yield from _json_texts(window, text_field)
    except (OSError, SourceError):
        return


def _windows(src: SourceFile, budget: float) -> Iterator[bytes]:
    n = min(32, max(1, math.ceil(budget / PIECE_BYTES)))
    width = int(budget // n)
    with open(src.path, "rb") as f:
        for k in range(n):
            offset = k * (src.size - width) // max(n - 1, 1)
            f.seek(offset)
            data = f.read(width)
            if src.format == JSONL:  # whole lines only
                start = data.find(b"\n") + 1 if offset else 0
                yield data[start : data.rfind(b"\n") + 1]
            else:
                start = (safe_cut(data, 0, len(data), last=False) or len(data)) if offset else 0
                yield data[start : safe_cut(data, max(start, 1), len(data), last=True) or start]


def _json_texts(block: bytes, text_field: str) -> Iterator[str]:
    for line in block.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        text = record.get(text_field) if isinstance(record, dict) else None
        if isinstance(text, str):
            yield text


def _parquet_sample(src: SourceFile, budget: float, text_field: str) -> Iterator[str]:
    pf = parquet_file(src)
    groups = pf.num_row_groups
    n = groups if budget == math.inf else min(groups, 32)
    chosen = sorted({k * (groups - 1) // max(n - 1, 1) for k in range(n)})
    share = budget / max(len(chosen), 1)
    for g in chosen:
        taken = 0
        for batch in pf.iter_batches(batch_size=256, row_groups=[g], columns=[text_field]):
            for text in batch.column(0).to_pylist():
                if isinstance(text, str):
                    yield text
                    taken += len(text)
            if taken >= share:
                break
