"""Preprocessing: discover source files, read them safely, clean the text.

Raw inputs are only ever opened for reading. Every file found is either read or
skipped with a reason, and the counts are logged so a user can see what went in.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fragment_llm.errors import DataError

log = logging.getLogger(__name__)

# C0/C1 control characters except \t (0x09) and \n (0x0a); \r is handled by newline normalization first.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved absolute path
    root: Path  # the configured source it was found under
    size: int
    mtime_ns: int

    @property
    def relpath(self) -> str:
        return self.path.name if self.root == self.path else self.path.relative_to(self.root).as_posix()


@dataclass
class PrepareStats:
    files_found: int = 0
    files_read: int = 0
    bytes_read: int = 0
    chars_out: int = 0
    invalid_bytes_replaced: int = 0
    control_chars_removed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count

    def log_summary(self) -> None:
        log.info(
            "Preprocessing: %d files found, %d read (%.1f MB), %d skipped; %d invalid UTF-8 sequences replaced, "
            "%d control characters removed; %d characters kept",
            self.files_found,
            self.files_read,
            self.bytes_read / 1e6,
            sum(self.skipped.values()),
            self.invalid_bytes_replaced,
            self.control_chars_removed,
            self.chars_out,
        )
        for reason, n in sorted(self.skipped.items()):
            log.info("  skipped %d file(s): %s", n, reason)


def _as_list(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def discover_files(
    paths: str | Sequence[str], extensions: Iterable[str], exclude_dirs: Iterable[str] = ()
) -> list[SourceFile]:
    """Every file with one of `extensions` under the given files/directories, in sorted order.

    Symlinks are followed only when their target stays inside the source root they were found under.
    """
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    excluded = set(exclude_dirs)
    found: dict[Path, SourceFile] = {}
    for raw in _as_list(paths):
        given = Path(raw).expanduser()
        if not given.exists():
            raise DataError(f"data.path: {raw!r} does not exist. Point data.path at a text file or a directory.")
        root = given.resolve()
        candidates = [root] if root.is_file() else _walk(root, excluded)
        for path in candidates:
            if not path.name.lower().endswith(exts):
                continue
            resolved = path.resolve()
            if resolved != root and not resolved.is_relative_to(root):
                log.warning("Skipping %s: it links outside its source root %s", path, root)
                continue
            if not resolved.is_file():
                continue
            st = resolved.stat()
            found.setdefault(resolved, SourceFile(resolved, root, st.st_size, st.st_mtime_ns))
    return sorted(found.values(), key=lambda f: f.path.as_posix())


def _walk(root: Path, excluded: set[str]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in excluded)
        for name in sorted(filenames):
            yield Path(dirpath) / name


def clean_text(raw: bytes, stats: PrepareStats) -> str:
    """Decode UTF-8 (invalid bytes become U+FFFD and are counted), normalize newlines, drop control chars."""
    text = raw.decode("utf-8", errors="replace")
    if "\ufffd" in text:
        # Count replacements that came from bad bytes, not U+FFFD characters already in the source.
        stats.invalid_bytes_replaced += text.count("\ufffd") - raw.count("\ufffd".encode())
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is encoding metadata, not content
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text, n = _CONTROL_CHARS.subn("", text)
    stats.control_chars_removed += n
    return text


def read_documents(files: Sequence[SourceFile], stats: PrepareStats) -> Iterator[tuple[str, str]]:
    """Yield (relative path, cleaned text) per readable, non-empty file; record the others as skipped."""
    stats.files_found += len(files)
    for f in files:
        try:
            with open(f.path, "rb") as fh:  # read-only: raw inputs are never modified
                raw = fh.read()
        except OSError as e:
            stats.skipped[f"unreadable ({e.strerror})"] += 1
            log.debug("Skipping unreadable %s: %s", f.path, e)
            continue
        text = clean_text(raw, stats)
        if not text.strip():
            stats.skipped["empty after cleaning"] += 1
            continue
        stats.files_read += 1
        stats.bytes_read += len(raw)
        stats.chars_out += len(text)
        yield f.relpath, text


def split_documents(docs: Sequence[tuple[str, str]], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic train/val split of (name, text) documents.

    Documents are put in a stable pseudo-random order (by a hash of their name), and the last
    `val_fraction` of the characters in that order form the validation split. A corpus of many
    files thus holds out whole files (plus at most one file cut at the boundary), while a single
    file is split 90/10 along its length, exactly as nanoGPT does for shakespeare.
    """
    ordered = sorted(docs, key=lambda d: (hashlib.sha256(d[0].encode()).hexdigest(), d[0]))
    total = sum(len(text) for _, text in ordered)
    n_train = int(total * (1.0 - val_fraction))
    train, val, seen = [], [], 0
    for _, text in ordered:
        if seen + len(text) <= n_train:
            train.append(text)
        elif seen >= n_train:
            val.append(text)
        else:
            cut = n_train - seen
            train.append(text[:cut])
            val.append(text[cut:])
        seen += len(text)
    return [t for t in train if t], [t for t in val if t]


def sources_fingerprint(files: Sequence[SourceFile]) -> list[list]:
    """What identifies the inputs for caching: path, size and modification time of every file."""
    return [[f.path.as_posix(), f.size, f.mtime_ns] for f in files]
