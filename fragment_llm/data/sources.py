"""Source discovery: the files that `data.path` names, resolved, filtered and checked.

`data.path` holds files, directories and globs. A file named on its own is read whatever its
ending (text unless it is .jsonl/.ndjson/.parquet); `data.extensions` filters what walking a
directory or matching a glob finds. Every file found is resolved; one whose
real path (through symlinks or `..`) leaves the source root it was found under is
refused, as is one over `data.max_file_mb`. Those are not errors: they are listed
with their reason in the prepare report. Raw inputs are only ever opened for reading.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fragment_llm.errors import DataError

TEXT, JSONL, PARQUET = "text", "jsonl", "parquet"
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class SourceFile:
    path: Path  # resolved absolute path
    root: Path  # the configured source it was found under
    size: int  # bytes on disk
    mtime_ns: int
    format: str  # text | jsonl | parquet
    gzip: bool

    @property
    def relpath(self) -> str:
        return self.path.name if self.root == self.path else self.path.relative_to(self.root).as_posix()

    @property
    def split_order(self) -> tuple[str, str]:
        """A stable pseudo-random order, so held-out files do not all come from one directory."""
        return hashlib.sha256(self.relpath.encode()).hexdigest(), self.path.as_posix()


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def as_list(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def normalize_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)


def file_format(name: str, extensions: tuple[str, ...], named: bool = False) -> tuple[str, bool] | None:
    """(format, gzip) for a file name with one of `extensions` (optionally + .gz), else None.

    A file the user `named` on its own is read whatever its ending: `book.txt` trains with the
    default data group too, whose extensions are only ['.py'].
    """
    lower = name.lower()
    gz = lower.endswith(".gz") and not any(e.endswith(".gz") for e in extensions)
    inner = lower[:-3] if gz else lower
    if not named and not inner.endswith(extensions):
        return None
    if inner.endswith(".jsonl") or inner.endswith(".ndjson"):
        return JSONL, gz
    if inner.endswith(".parquet"):
        return PARQUET, gz
    return TEXT, gz


def discover_files(
    paths: str | Sequence[str],
    extensions: Iterable[str],
    exclude_dirs: Iterable[str] = (),
    max_file_bytes: float = float("inf"),
) -> tuple[list[SourceFile], list[Skipped]]:
    """Every file under the given files/directories/globs with one of `extensions`, sorted by path.

    Returns the files to read and the files refused (with why). A path that matches nothing
    is an error: it is almost always a typo.
    """
    exts = normalize_extensions(extensions)
    excluded = set(exclude_dirs)
    found: dict[Path, SourceFile] = {}
    skipped: list[Skipped] = []
    for raw in as_list(paths):
        root, candidates = _expand(raw, excluded, skipped)
        named = candidates == [root]  # a file given by its own path, not found by walking or a glob
        for path in candidates:
            fmt = file_format(path.name, exts, named)
            if fmt is None:
                continue
            try:
                resolved = path.resolve()
            except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
                skipped.append(Skipped(str(path), f"cannot resolve path ({e})"))
                continue
            if resolved != root and not resolved.is_relative_to(root):
                skipped.append(Skipped(str(path), f"leads outside its source root {root}"))
                continue
            if not resolved.is_file():
                continue
            if fmt == (PARQUET, True):
                skipped.append(Skipped(str(path), "a gzip-compressed .parquet is not supported; decompress it"))
                continue
            st = resolved.stat()
            if st.st_size > max_file_bytes:
                limit_mb = max_file_bytes / 1e6
                skipped.append(Skipped(str(path), f"larger than data.max_file_mb={limit_mb:g} ({st.st_size:,} bytes)"))
                continue
            found.setdefault(resolved, SourceFile(resolved, root, st.st_size, st.st_mtime_ns, *fmt))
    return sorted(found.values(), key=lambda f: f.path.as_posix()), skipped


def _expand(raw: str, excluded: set[str], skipped: list[Skipped]) -> tuple[Path, Iterator[Path] | list[Path]]:
    """The root of one `data.path` entry and the candidate files under it."""
    given = os.path.expanduser(raw)
    parts = Path(given).parts
    wild = next((i for i, p in enumerate(parts) if _GLOB_CHARS & set(p)), None)
    if wild is None:
        path = Path(given)
        if not path.exists():
            raise DataError(
                f"data.path: {raw!r} does not exist (relative paths start from {Path.cwd()}). "
                "Point data.path at a file, a directory or a glob."
            )
        root = path.resolve()
        return root, ([root] if root.is_file() else _walk(root, root, excluded, skipped))
    # A glob's root is its literal leading directory: `corpus/**/*.txt` may not reach outside `corpus/`.
    root = Path(*parts[:wild]).resolve() if wild else Path.cwd().resolve()
    matches = sorted(glob.glob(given, recursive=True))
    if not matches:
        raise DataError(f"data.path: the glob {raw!r} matches nothing. Check the pattern (quote it on the shell).")
    files: list[Path] = []
    for match in map(Path, matches):
        if match.is_dir():
            files.extend(_walk(match, root, excluded, skipped))
        elif not excluded & set(match.parts[:-1]):
            files.append(match)
    return root, files


def _walk(top: Path, root: Path, excluded: set[str], skipped: list[Skipped]) -> Iterator[Path]:
    """Files under `top` (a directory within `root`), not following directory links."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        kept = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if d in excluded:
                continue
            if full.is_symlink():
                # os.walk does not follow it; say so when it would have led outside the root.
                target = full.resolve()
                if not target.is_relative_to(root):
                    skipped.append(Skipped(str(full), f"directory link leads outside its source root {root}"))
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            yield Path(dirpath) / name


def nothing_to_read(
    paths: str | Sequence[str], extensions: Sequence[str], exclude_dirs: Iterable[str], refused: list[Skipped]
) -> DataError:
    """Why `data.path` gave no file to read, and what to type instead."""
    if refused:
        return DataError(
            f"data.path: no readable file under {paths!r}: {len(refused)} refused, e.g. {refused[0].path}: "
            f"{refused[0].reason}. Fix that file, or point data.path elsewhere."
        )
    endings = _endings_under(paths, exclude_dirs).most_common(4)
    if not endings:
        return DataError(f"data.path: {paths!r} holds no files. Point data.path at your text.")
    held = ", ".join(f"{n} {ending}" for ending, n in endings)
    named = ",".join(e for e, _ in endings if e.startswith("."))
    fix = f"'data.extensions=[{named}]'" if named else "data.extensions=[...] with their endings"
    return DataError(
        f"data.path: no files ending in {list(extensions)} (or .gz of them) under {paths!r}; it holds {held} "
        f"files. Read them with data=text (text, Markdown, JSON lines, Parquet) or {fix}, or name a file itself."
    )


def _endings_under(paths: str | Sequence[str], exclude_dirs: Iterable[str], limit: int = 10_000) -> Counter[str]:
    """How many files of each ending (`.txt`, `.md.gz`, ...) the directories and globs of `data.path` hold.

    Looks at `limit` files at most: it only feeds an error message.
    """
    endings: Counter[str] = Counter()
    for raw in as_list(paths):
        try:
            _, candidates = _expand(raw, set(exclude_dirs), [])
        except DataError:
            continue
        for path in itertools.islice(candidates, limit):
            suffixes = [s.lower() for s in path.suffixes[-2:] if 1 < len(s) <= 9]
            if suffixes and suffixes[-1] != ".gz":
                suffixes = suffixes[-1:]
            endings["".join(suffixes) or "(no ending)"] += 1
    return endings


def sources_fingerprint(files: Sequence[SourceFile]) -> list[list]:
    """What identifies the inputs for caching: path, size and modification time of every file."""
    return [[f.path.as_posix(), f.size, f.mtime_ns] for f in files]
