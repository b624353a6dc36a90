"""Reading a small file of a directory someone handed us (a model or run directory): no links out, no
devices or FIFOs, and never more than a limit, whatever the file system claims its size is."""

from __future__ import annotations

from pathlib import Path


def read_inside(path: Path, limit: int) -> bytes:
    """The bytes of `path`, which must be a regular file inside its own directory; OSError otherwise."""
    root, resolved = path.parent.resolve(), path.resolve()
    if not resolved.is_relative_to(root):
        raise OSError(f"it links to {resolved}, outside {root}")
    if not resolved.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not resolved.is_file():  # a FIFO would block for ever, /dev/zero never end
        raise OSError("not a regular file")
    with open(resolved, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit:,} bytes, too large for this file")
    return data
