"""Two processes, one run: the second is refused with a message naming the first; a dead one's lock is taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from fragment_llm.errors import ConfigError
from fragment_llm.training.run import train
from fragment_llm.training.run_lock import LOCK_FILE, RunInUseError, run_lock
from tests.conftest import REPO_ROOT, compose_train

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="runs are locked with flock (POSIX)")

HOLD = "import sys, time; from pathlib import Path; from fragment_llm.training.run_lock import run_lock\n" + (
    "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n    time.sleep(120)\n"
)


@pytest.fixture
def other_process(tmp_path):
    """A second process holding the lock of `tmp_path / 'run'` (as a training run owning it would)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-c", HOLD, str(tmp_path / "run"), "--a-marker-argument"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_process_on_the_same_run_is_refused_naming_the_first(tmp_path, other_process):
    with pytest.raises(RunInUseError) as refused:
        train(compose_train(tmp_path, ["model=tiny"]))  # paths.output_dir is tmp_path/run, as in other_process
    message = str(refused.value)
    assert f"pid {other_process.pid} on {socket.gethostname()}" in message
    assert "--a-marker-argument" in message and "since 20" in message  # its command line and start time
    assert f"kill {other_process.pid}" in message and "start a new run" in message  # what to do
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before touching the run

    other_process.kill()  # killed: the kernel drops its lock, and the next process takes the run over
    other_process.wait()
    with run_lock(tmp_path / "run"):
        held_by = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert held_by["pid"] == os.getpid()


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released_at_the_end(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now belongs to no process
    run = tmp_path / "run"
    run.mkdir()
    left = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01 00:00:00", "command": "python x"}
    (run / LOCK_FILE).write_text(json.dumps(left))
    with caplog.at_level(logging.INFO), run_lock(run):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(RunInUseError), run_lock(run):  # held: even this process cannot take it twice
            pass
    assert f"left by pid {dead.pid}" in caplog.text and "no longer running" in caplog.text
    assert not (run / LOCK_FILE).exists()  # released, and the file removed


def test_the_lock_is_released_when_training_fails(tmp_path):
    with pytest.raises(ConfigError, match="model.n_layer"):
        train(compose_train(tmp_path, ["model.n_layer=0"]))  # refused by the config checks, inside the lock
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    with run_lock(tmp_path / "run"):
        pass
