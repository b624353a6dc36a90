"""Runs train.py, freezing at a chosen moment of one real checkpoint save so that a test can SIGKILL it there.

    python tests/kill_driver.py MARKER MOMENT STEP [train.py overrides ...]

MOMENT is `mid-write` (half of last.ckpt's new bytes written, nothing renamed yet) or
`after-rename` (the new last.ckpt in place, training about to go on). The save runs
unchanged (Lightning's ModelCheckpoint -> SafeCheckpointIO.save_checkpoint -> atomic_write);
only its lowest calls are watched: the bytes `torch.save` writes into the temporary file
of last.ckpt at global step STEP, and the `os.replace` that puts that file in place. At the
chosen moment MARKER is written with the call stack (the test checks it is the real save
path) and the process sleeps until it is killed. Test instrumentation only.
"""

import io
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

import torch

marker, moment, step = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
real_save, real_replace = torch.save, os.replace
armed = {"tmp": None}  # the temporary file of the watched save, once torch.save has started writing it


def freeze() -> None:
    staged = marker.with_name(marker.name + ".tmp")
    staged.write_text("".join(traceback.format_stack()))
    real_replace(staged, marker)  # the test sees the marker whole or not at all
    time.sleep(600)


class HalfThenFreeze(io.RawIOBase):
    """Passes bytes on to the real file and freezes once half of them (`total`) went through."""

    def __init__(self, f, total: int) -> None:
        self.f, self.left = f, total // 2

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) >= self.left:
            self.f.write(data[: self.left])
            self.f.flush()
            freeze()
        self.left -= len(data)
        return self.f.write(data)


def watched_save(obj, f, *args, **kwargs):
    name = Path(getattr(f, "name", "")).name
    if name.startswith(".last.ckpt.tmp") and isinstance(obj, dict) and obj.get("global_step") == step:
        armed["tmp"] = f.name
        if moment == "mid-write":
            size = io.BytesIO()
            real_save(obj, size, *args, **kwargs)
            return real_save(obj, HalfThenFreeze(f, size.tell()), *args, **kwargs)
    return real_save(obj, f, *args, **kwargs)


def watched_replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    if moment == "after-rename" and armed["tmp"] is not None and os.fspath(src) == armed["tmp"]:
        freeze()


torch.save, os.replace = watched_save, watched_replace
train_py = str(Path(__file__).resolve().parents[1] / "train.py")
sys.argv = [train_py, *sys.argv[4:]]
runpy.run_path(train_py, run_name="__main__")
