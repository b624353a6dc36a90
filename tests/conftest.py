"""Shared fixtures: real configs composed with Hydra's compose API, and small corpora."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import fragment_llm.config  # noqa: F401  (registers the structured config schemas)
from fragment_llm.data.readers import safe_cut

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
SHAKESPEARE = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def compose_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def compose_train(tmp_path: Path, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The real training config, with every path inside `tmp_path` (nothing outside is touched)."""
    return compose_config("train", [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/run", *overrides])


def python_env() -> dict[str, str]:
    """The environment of a subprocess that imports this checkout."""
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "0"}


def run_python(args: list[str], cwd: Path | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python ARGS` in a subprocess with this checkout importable, as a user runs train.py/generate.py/prepare.py."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=python_env(), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def cut_at_safe_points(raw: bytes, keep: Callable[[], bool]) -> list[bytes]:
    """`raw` in pieces, cut at those of the points `safe_cut` allows for which `keep()` says yes."""
    cuts, pos = [], 1
    while (cut := safe_cut(raw, pos, len(raw), last=False)) is not None:
        if keep():
            cuts.append(cut)
        pos = cut + 1
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def synthetic_text(n_chars: int, seed: int = 0) -> str:
    """Deterministic English-like prose with learnable structure, for machines without the shared corpus."""
    rng = random.Random(seed)
    subjects = ["the king", "a fool", "my lord", "the queen", "this night", "our love", "the crown", "thy heart"]
    verbs = ["speaks of", "longs for", "remembers", "betrays", "defends", "forgets", "awaits", "commands"]
    objects = [
        "the sea.",
        "his honour.",
        "a quiet grave.",
        "the morning.",
        "her brother.",
        "old Rome.",
        "the weary world.",
        "sweet mercy.",
    ]
    lines = []
    while sum(map(len, lines)) < n_chars:
        speaker = rng.choice(["KING", "QUEEN", "FOOL", "DUKE"])
        body = " ".join(
            f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(objects)}"
            for _ in range(rng.randint(1, 3))
        )
        lines.append(f"{speaker}:\n{body}\n\n")
    return "".join(lines)[:n_chars]


def corpus_text(n_chars: int) -> str:
    """The start of tiny-shakespeare where the shared copy exists, else synthetic text."""
    if SHAKESPEARE.is_file():
        return SHAKESPEARE.read_text(encoding="utf-8")[:n_chars]
    return synthetic_text(n_chars)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus" / "input.txt"
    path.parent.mkdir()
    path.write_text(corpus_text(200_000), encoding="utf-8")
    return path
