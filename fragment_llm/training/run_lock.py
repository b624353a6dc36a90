"""One process per run directory: a second one that would write or resume the same run is refused.

The process that owns a run (global rank 0; the other ranks of its job write nothing there)
holds an exclusive `flock` on `<run>/.lock` and writes into it who it is: pid, host, start
time and command line, for the message a second process gets. The kernel drops the lock
when its holder exits in any way, `kill -9` and power cuts included, so a lock left behind
by a dead process never blocks: the next process takes it over and logs whose it was.
On file systems without locks (and on Windows) runs are not locked, with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fragment_llm.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # e.g. some network file systems


class RunInUseError(ConfigError):
    """Another process is writing or resuming this run."""


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": shlex.join([sys.executable, *sys.argv]),
    }


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        data = json.loads(os.pread(fd, 64 << 10, 0) or b"null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "a process that has not said who it is yet"
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}: "
        f"{str(holder.get('command'))[:300]}"
    )


def _how_to_stop(holder: dict[str, Any] | None) -> str:
    if holder is None:
        return "see who holds the file with `fuser -v <run>/.lock`"
    where = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
    return f"kill {holder.get('pid')}{where}"


def _acquire(path: Path) -> int | None:
    """An open descriptor holding the lock on `path`, or None where the file system cannot lock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in _NO_LOCKS:
                log.warning("%s: this file system cannot lock files; nothing stops a second process here", path)
                return None
            raise RunInUseError(
                f"{path.parent} is in use by {_describe(holder)}. Wait for it to finish or stop it "
                f"({_how_to_stop(holder)}); to train alongside it, start a new run (without resume/ckpt_path)."
            ) from None
        # The previous holder may have deleted the file between our open and our lock: lock the new one then.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold `<run_dir>/.lock` for the duration; RunInUseError if another process holds it."""
    if fcntl is None:
        log.warning("Run directories cannot be locked on this platform; nothing stops a second process")
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = _acquire(path)
    if fd is None:
        yield
        return
    try:
        left = _read_holder(fd)
        if left is not None:
            log.info("Took over %s, left by %s (no longer running)", path, _describe(left))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock goes: whoever waits on this file then locks a new one
        os.close(fd)
