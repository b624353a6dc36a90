"""The audit trail's parts: the git state of the checkout, and sessions kept across resumes."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from fragment_llm.inference.loading import origin
from fragment_llm.training.run_record import RECORD_FILE, git_state, write_run_record


def _git(repo, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_state_is_the_commit_and_whether_tracked_files_changed(tmp_path):
    repo = tmp_path / "project"
    (repo / "pkg").mkdir(parents=True)
    (repo / "a.py").write_text("a = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "notes.txt").write_text("untracked files do not count")
    assert git_state(repo) == {"commit": head, "dirty": False}
    (repo / "a.py").write_text("a = 2\n")
    assert git_state(repo) == {"commit": head, "dirty": True}
    assert git_state(repo / "pkg") is None  # inside a repository that is not the project's own checkout
    assert git_state(tmp_path) is None  # not a checkout at all


def test_git_state_without_git_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert git_state(tmp_path) is None


def test_a_resumed_run_records_its_session_on_top_of_the_earlier_ones(tmp_path):
    write_run_record(tmp_path, {"command": "python train.py", "started": "1"})
    write_run_record(tmp_path, {"command": "python train.py resume=x", "started": "2"})
    write_run_record(tmp_path, {"command": "python train.py resume=x trainer.max_steps=9", "started": "3"})
    record = json.loads((tmp_path / RECORD_FILE).read_text())
    assert record["started"] == "3" and [s["started"] for s in record["earlier_sessions"]] == ["1", "2"]
    assert all("earlier_sessions" not in s for s in record["earlier_sessions"])


def test_the_origin_line_shows_only_printable_text_of_an_untrusted_record():
    record = {"run_dir": "/runs/a\x1b[2J", "git": {"commit": "0123456789abcdef", "dirty": True}, "command": "x" * 999}
    line = origin(record)
    assert line.startswith("trained in /runs/a[2J (commit 0123456789ab with uncommitted changes, started None)")
    assert "\x1b" not in line and len(line) < 500
    assert origin(None).startswith("no run record") and origin(["not", "a", "dict"]).startswith("no run record")
