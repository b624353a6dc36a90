"""Format readers: stream a source file as work items, never loading it whole.

Text (.txt, .md, ...) is one document per file, streamed in pieces cut at points
where cleaning and tokenization cannot see across the cut (`safe_cut`). A .jsonl
source is streamed in blocks of whole lines, a .parquet source in record batches
of its text column (pyarrow reads one batch at a time). .gz variants of the text
formats are decompressed on the fly.

Each source is split between train and val at a fraction of its length
(`val_from`), so that one file alone still yields both splits.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fragment_llm.data.sources import JSONL, PARQUET, TEXT, SourceFile

PIECE_BYTES = 1 << 20  # text is handed on in pieces of about this size
MAX_PIECE_BYTES = 64 << 20  # a piece with no safe cut is cut hard beyond this
SNIFF_BYTES = 64 << 10
PARQUET_BATCH_ROWS = 1024
TEXT_TYPES = ("string", "large_string", "string_view")

# After a newline, before an ASCII letter or digit: no pre-tokenizer match spans that point (each
# alternative of the split pattern either cannot hold a newline or ends at one), NFC never composes
# across a newline, and a \r\n pair stays whole. Second choice, for text without newlines: between
# an ASCII letter and a space (a letter run ends there; the space starts the next pre-token).
_SAFE_NEWLINE = re.compile(rb"\n(?=[A-Za-z0-9])")
_SAFE_SPACE = re.compile(rb"(?<=[A-Za-z])(?= )")


class SourceError(Exception):
    """A source (or the rest of it) cannot be read; the message is the reason reported."""


@dataclass
class Item:
    """One unit of work for an encoder process, with what the main process needs to place its result."""

    kind: str  # text | jsonl | records | end
    split: str  # train | val
    source: int  # index into the list of sources being read
    payload: Any = None  # text: bytes; jsonl: bytes of whole lines; records: list of str|None; end: reason|None
    first_line: int = 1  # jsonl: line number of the first line; records: row number of the first row
    doc_start: bool = True  # text: this piece starts a document
    doc_end: bool = True  # text: this piece ends a document
    file_start: bool = False  # text: the first piece of the file (a byte-order mark may be stripped)
    disk_bytes: int = 0  # bytes of the file on disk this item accounts for (progress)

    @property
    def nbytes(self) -> int:
        if self.kind == "records":
            return sum(len(t) for t in self.payload if isinstance(t, str))
        return len(self.payload) if isinstance(self.payload, bytes) else 0


def safe_cut(buf: bytes | memoryview, lo: int, hi: int, last: bool) -> int | None:
    """A position in buf[lo:hi] where the text may be cut (the first one, or the last one); None if none."""
    for pattern in (_SAFE_NEWLINE, _SAFE_SPACE):
        if last:
            # Look near the end first: a match in the last 64 KiB is almost always there.
            for start in (max(lo, hi - SNIFF_BYTES), lo):
                found = None
                for m in pattern.finditer(buf, start, hi):
                    found = m.end() if pattern is _SAFE_NEWLINE else m.start()
                if found is not None and lo < found:
                    return found
        else:
            m = pattern.search(buf, lo, hi)
            if m is not None:
                return m.end() if pattern is _SAFE_NEWLINE else m.start()
    return None


def split_at_safe_cuts(data: bytes, size: int) -> Iterator[bytes]:
    """`data` in parts of about `size` bytes (more where no safe cut comes sooner), cut where `safe_cut` allows."""
    start = 0
    while len(data) - start > size:
        cut = safe_cut(data, start + size, len(data), last=False)
        if cut is None:
            break
        yield data[start:cut]
        start = cut
    yield data[start:]


def _utf8_boundary(buf: bytes, pos: int) -> int:
    while 0 < pos < len(buf) and (buf[pos] & 0xC0) == 0x80:  # a continuation byte: step back
        pos -= 1
    return pos


def sniff(head: bytes) -> str | None:
    """Why the start of a file says it is not text, or None."""
    if b"\x00" in head:
        return "binary (NUL bytes)"
    if head:
        text = head.decode("utf-8", errors="replace")
        invalid = text.count("\ufffd") - head.count("\ufffd".encode())
        if invalid > len(head) // 2:
            return "binary (mostly invalid UTF-8)"
    return None


class _HashingReader:
    """A raw file that hashes what passes through it: the manifest's source hashes cost no extra read."""

    def __init__(self, path) -> None:
        self.fh, self.sha256, self.pos = open(path, "rb"), hashlib.sha256(), 0  # read-only: inputs are never modified

    def read(self, n: int = -1) -> bytes:
        block = self.fh.read(n)
        self.sha256.update(block)
        self.pos += len(block)
        return block

    def close(self) -> None:
        self.fh.close()


class _Gunzip:
    """Streaming gzip decompression (multi-member too) that knows how much of the file it has consumed."""

    def __init__(self, raw: _HashingReader) -> None:
        self.raw, self.pending = raw, b""
        self._d = zlib.decompressobj(wbits=31)

    @property
    def consumed(self) -> int:
        return self.raw.pos - len(self.pending)

    def read(self, n: int) -> bytes:
        out = []
        while n > 0:
            if not self.pending:
                self.pending = self.raw.read(64 << 10)
                if not self.pending:
                    if not self._d.eof:
                        raise EOFError("the compressed stream ends early")
                    break
            if self._d.eof:  # another gzip member follows
                self._d = zlib.decompressobj(wbits=31)
            block = self._d.decompress(self.pending, n)
            self.pending = self._d.unused_data if self._d.eof else self._d.unconsumed_tail
            out.append(block)
            n -= len(block)
        return b"".join(out)

    def close(self) -> None:
        self.raw.close()


class _Stream:
    """A source's content as a byte stream (decompressed if .gz), with a size cap, and where the content
    reaches `disk_target` (the val cut, a fraction of the file on disk): exact for plain files, interpolated
    within one read for .gz ones."""

    def __init__(self, src: SourceFile, max_bytes: float, disk_target: float = math.inf) -> None:
        self.src, self.max_bytes, self.read_total = src, max_bytes, 0
        self.raw = _HashingReader(src.path)
        self.fh = _Gunzip(self.raw) if src.gzip else self.raw
        self.disk_target = disk_target
        self.content_target: float | None = None if src.gzip else disk_target

    def read(self, n: int) -> bytes:
        disk_before, content_before = self.disk_pos, self.read_total
        try:
            block = self.fh.read(n)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(f"read error after {self.read_total:,} bytes ({e})") from None
        self.read_total += len(block)
        if self.read_total > self.max_bytes:
            raise SourceError(f"stopped at data.max_file_mb={self.max_bytes / 1e6:g} (decompressed size)")
        if self.content_target is None and self.disk_pos >= self.disk_target:
            share = (self.disk_target - disk_before) / max(self.disk_pos - disk_before, 1)
            self.content_target = content_before + share * len(block)
        return block

    def reached(self, base: int, length: int) -> bool:
        """Whether the val cut falls before content offset base + length."""
        return self.content_target is not None and self.content_target - base < length

    @property
    def disk_pos(self) -> int:
        return self.fh.consumed if self.src.gzip else self.raw.pos

    def close(self) -> None:
        self.fh.close()


def hash_file(path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(PIECE_BYTES):
            sha.update(block)
    return sha.hexdigest()


def check_source(src: SourceFile, text_field: str) -> str | None:
    """Why a source cannot be read at all (binary, unreadable, no text column), or None."""
    if src.format == PARQUET:
        try:
            schema = parquet_file(src).schema_arrow
        except SourceError as e:
            return str(e)
        if text_field not in schema.names:
            return f"no column {text_field!r} (columns: {', '.join(schema.names)}); set data.text_field"
        kind = str(schema.field(text_field).type)
        if kind not in TEXT_TYPES:
            return f"column {text_field!r} holds {kind}, not text"
        return None
    try:
        stream = _Stream(src, float("inf"))
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    try:
        return sniff(stream.read(SNIFF_BYTES))
    except SourceError as e:
        return str(e)
    finally:
        stream.close()


def iter_items(src: SourceFile, index: int, val_from: float, text_field: str, max_bytes: float) -> Iterator[Item]:
    """Work items for the whole source, then an `end` item: {"stopped": why reading stopped early or None,
    "sha256": the file's hash when it was read to the end}."""
    reader = {TEXT: _text_items, JSONL: _jsonl_items, PARQUET: _parquet_items}[src.format]
    digest = []  # the reader appends the file's hash once it has read it all
    try:
        yield from reader(src, index, val_from, text_field, max_bytes, digest)
    except SourceError as e:
        yield Item("end", "train", index, payload={"stopped": str(e), "sha256": None})
    except OSError as e:
        yield Item("end", "train", index, payload={"stopped": f"unreadable ({e.strerror or e})", "sha256": None})
    else:
        yield Item("end", "train", index, payload={"stopped": None, "sha256": digest[0] if digest else None})


def _val_target(src: SourceFile, val_from: float) -> float:
    """Where the source's val part begins, in bytes on disk."""
    return val_from * src.size if val_from < 1.0 else math.inf


class _Progress:
    """Bytes on disk consumed since the last item, so progress bars count compressed files correctly."""

    def __init__(self, stream: _Stream) -> None:
        self.stream, self.done = stream, 0

    def take(self, at_end: bool) -> int:
        now = self.stream.src.size if at_end else min(self.stream.disk_pos, self.stream.src.size)
        delta, self.done = max(0, now - self.done), max(now, self.done)
        return delta


def _text_items(src, index, val_from, _field, max_bytes, digest: list) -> Iterator[Item]:
    stream = _Stream(src, max_bytes, _val_target(src, val_from))
    progress = _Progress(stream)
    split = "train" if val_from > 0 else "val"
    buf, base, need, eof = b"", 0, 2 * PIECE_BYTES, False  # base: content offset of buf[0]
    doc_start, file_start = True, True
    try:
        while True:
            while not eof and len(buf) < need:
                block = stream.read(PIECE_BYTES)
                eof, buf = not block, buf + block
            if not buf:
                if file_start:  # an empty file is an empty document: reported as too short
                    yield Item("text", split, index, b"", file_start=True, disk_bytes=progress.take(True))
                break
            cut, ends_doc = None, False
            if split == "train" and stream.reached(base, len(buf)):
                cut = safe_cut(buf, max(1, int(stream.content_target) - base), len(buf), last=False)
                ends_doc = cut is not None
            if cut is None:
                if eof:
                    cut = len(buf)
                else:
                    cut = safe_cut(buf, 1, PIECE_BYTES, last=True) or safe_cut(buf, PIECE_BYTES, len(buf), last=False)
                    if cut is None and len(buf) > MAX_PIECE_BYTES:
                        cut = _utf8_boundary(buf, PIECE_BYTES)  # no safe point in 64 MiB: this seam may tokenize apart
                    if cut is None:
                        need = len(buf) + PIECE_BYTES
                        continue
            need = 2 * PIECE_BYTES
            piece, buf, base = buf[:cut], buf[cut:], base + cut
            at_end = eof and not buf
            yield Item("text", split, index, piece, doc_start=doc_start, doc_end=at_end or ends_doc,
                       file_start=file_start, disk_bytes=progress.take(at_end))  # fmt: skip
            doc_start, file_start = ends_doc, False
            if ends_doc:
                split = "val"
        digest.append(stream.raw.sha256.hexdigest())
    finally:
        stream.close()


def _jsonl_items(src, index, val_from, _field, max_bytes, digest: list) -> Iterator[Item]:
    stream = _Stream(src, max_bytes, _val_target(src, val_from))
    progress = _Progress(stream)
    split = "train" if val_from > 0 else "val"
    buf, base, line, eof = b"", 0, 1, False  # base: content offset of buf[0]; line: its line number
    try:
        while not eof or buf:
            block = stream.read(PIECE_BYTES) if not eof else b""
            eof, buf = not block, buf + block
            end = len(buf) if eof else buf.rfind(b"\n") + 1
            if end == 0:
                continue  # a line longer than a block: read on
            chunk, buf = buf[:end], buf[end:]
            if split == "train" and stream.reached(base, len(chunk)):
                offset = int(stream.content_target) - base
                cut = 0 if offset <= 0 else chunk.find(b"\n", offset - 1) + 1 or len(chunk)
                if cut:
                    yield Item("jsonl", "train", index, chunk[:cut], first_line=line)
                    line, base, chunk = line + chunk.count(b"\n", 0, cut), base + cut, chunk[cut:]
                split = "val"
            if chunk:
                yield Item("jsonl", split, index, chunk, first_line=line, disk_bytes=progress.take(eof and not buf))
            line, base = line + chunk.count(b"\n"), base + len(chunk)
        digest.append(stream.raw.sha256.hexdigest())
    finally:
        stream.close()


def parquet_file(src: SourceFile):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(src.path)
    except (OSError, pa.ArrowException) as e:
        raise SourceError(f"not a readable parquet file ({e})") from None


def _parquet_items(src, index, val_from, text_field, _max_bytes, digest: list) -> Iterator[Item]:
    import pyarrow as pa

    pf = parquet_file(src)
    rows = pf.metadata.num_rows
    cut_row = round(val_from * rows)
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
            texts = batch.column(0).to_pylist()
            n = len(texts)
            pieces = [(row, texts)]
            if row < cut_row < row + n:
                pieces = [(row, texts[: cut_row - row]), (cut_row, texts[cut_row - row :])]
            for first, part in pieces:
                split = "train" if first < cut_row else "val"
                disk = round(src.size * len(part) / max(rows, 1))
                yield Item("records", split, index, part, first_line=first + 1, disk_bytes=disk)
            row += n
    except (OSError, pa.ArrowException) as e:
        raise SourceError(f"read error after {row:,} rows ({e})") from None
    digest.append(hash_file(src.path))
