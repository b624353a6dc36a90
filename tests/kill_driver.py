"""Runs train.py, freezing at a chosen moment of one checkpoint save so that a test can SIGKILL it there.

    python tests/kill_driver.py MARKER MOMENT STEP [train.py overrides ...]

MOMENT is `mid-write` (half of last.ckpt's new bytes written, nothing renamed yet) or
`after-rename` (the new last.ckpt in place, training about to go on). When the save of
last.ckpt at global step STEP reaches that moment, MARKER is created and the process sleeps.
Test instrumentation only: it patches the checkpoint plugin in this process, nothing else.
"""

import io
import runpy
import sys
import time
from pathlib import Path

import torch

import fragment_llm.training.checkpoint_io as checkpoint_io

marker, moment, step = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
save = checkpoint_io.SafeCheckpointIO.save_checkpoint


def freeze() -> None:
    marker.touch()
    time.sleep(600)


def save_and_freeze(self, checkpoint, path, storage_options=None):
    if Path(path).name != "last.ckpt" or checkpoint["global_step"] != step:
        return save(self, checkpoint, path, storage_options)
    if moment == "after-rename":
        save(self, checkpoint, path, storage_options)
        freeze()
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()

    def half_then_freeze(f):
        f.write(data[: len(data) // 2])
        f.flush()
        freeze()

    checkpoint_io.atomic_write(Path(path), half_then_freeze)


checkpoint_io.SafeCheckpointIO.save_checkpoint = save_and_freeze
train_py = str(Path(__file__).resolve().parents[1] / "train.py")
sys.argv = [train_py, *sys.argv[4:]]
runpy.run_path(train_py, run_name="__main__")
