"""Checkpoint files that survive a kill at any moment and never execute code when read.

Lightning's default writer stages a checkpoint in the system temp directory and moves it into
place. Where /tmp is another file system (tmpfs, a container layer) that move is a copy, and a
process killed during the copy leaves a truncated `last.ckpt` where the good one was. Here the
bytes go to a hidden temporary file beside the target, are flushed to disk, and replace the
target with one atomic rename: at every instant the path holds either the old or the new file.

Reading always uses `torch.load(weights_only=True)`: tensors and plain containers only.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from fragment_llm.checkpoint_file import load_checkpoint_safely  # noqa: F401  (re-exported)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call `write(file)` on a temporary file, then put it at `path`: a crash leaves the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Host and PID: two processes (on two nodes, maybe with the same PID in containers) never share a temp file.
    tmp = path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # and the rename itself survives a power cut


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin with atomic same-directory saves and weights-only loads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(Path(path), lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is always True: a checkpoint is data, whoever asks.
        return load_checkpoint_safely(path, map_location=map_location)


class FlushLogsOnCheckpoint(Callback):
    """Flush the loggers whenever a checkpoint is written: the logs then never lag behind the state a resumed
    run starts from (TensorBoard otherwise buffers up to two minutes, lost if the process is killed)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()
