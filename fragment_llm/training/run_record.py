"""The audit trail: what produced a run, in `<run>/run_record.json` and in every checkpoint it writes.

A record holds the exact command line, the project's git commit (and whether the checkout had
uncommitted changes), the versions of Python and the libraries that decide the numbers, the
machine (CPU, GPU, threads, host), and the token cache trained on: its manifest's SHA-256 and
the source files with their sizes and hashes. A resumed run records its new session on top and
keeps the earlier ones under `earlier_sessions`. Only plain data, so checkpoints still load with
`torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from fragment_llm.data.dataset import TokenCache
from fragment_llm.training.checkpoint_io import atomic_write

RECORD_FILE = "run_record.json"
CHECKPOINT_KEY = "run_record"
PROJECT_DIR = Path(__file__).resolve().parents[2]  # the checkout holding fragment_llm/
GIT_TIMEOUT_S = 5
LIBRARIES = ("torch", "lightning", "hydra-core", "omegaconf", "numpy", "tokenizers", "tiktoken")


def collect_run_record(run_dir: Path, cache: TokenCache, trainer: pl.Trainer) -> dict[str, Any]:
    """This session's record (plain data: str, int, float, bool, None, lists and dicts)."""
    from fragment_llm import __version__

    record = {
        "run_dir": str(run_dir),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "git": git_state(PROJECT_DIR),
        "versions": {"python": platform.python_version(), "fragment_llm": __version__}
        | {name: _version(name) for name in LIBRARIES},
        "machine": machine(),
        "training": {"precision": str(trainer.precision), "processes": trainer.world_size},
        "data": token_cache_summary(cache),
    }
    return json.loads(json.dumps(record))  # plain data, checked


def git_state(directory: Path) -> dict[str, Any] | None:
    """{"commit", "dirty"} of the git checkout at `directory`; None without git or outside a checkout."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True
        )
        return done.stdout

    try:
        top, commit = git("rev-parse", "--show-toplevel", "HEAD").split()
        if Path(top).resolve() != directory.resolve():  # e.g. installed inside somebody else's repository
            return None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def machine() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpus": torch.cuda.device_count() if cuda else 0,
    }


def token_cache_summary(cache: TokenCache) -> dict[str, Any]:
    manifest = cache.directory / "manifest.json"
    return {
        "cache": str(cache.directory),
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "report": str(cache.directory / "prepare_report.json"),
        "tokenizer_sha256": cache.meta.get("tokenizer_sha256"),
        "tokens": cache.meta.get("tokens"),
        "sources": [{k: s.get(k) for k in ("path", "size", "sha256")} for s in cache.meta.get("sources", [])],
    }


def write_run_record(run_dir: Path, record: dict[str, Any]) -> None:
    """`run_record.json` (atomically): this session on top, earlier sessions (a resumed run) kept below."""
    path = run_dir / RECORD_FILE
    earlier: list[dict[str, Any]] = []
    try:
        previous = json.loads(path.read_text())
        earlier = [*previous.pop("earlier_sessions", []), previous]
    except (OSError, ValueError, AttributeError, TypeError):
        pass  # none yet (or unreadable: this session's record replaces it)
    text = json.dumps({**record, "earlier_sessions": earlier}, indent=1)
    atomic_write(path, lambda f: f.write(text.encode()))


class RecordInCheckpoints(Callback):
    """Puts this session's record into every checkpoint, so a checkpoint copied elsewhere still says where it
    came from (generate.py logs it)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.record


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None
