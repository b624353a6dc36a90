"""The package's layers reach only down: config < data < model < interop < inference < training (from the imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "fragment_llm"
# What each layer may import from the package besides itself; `base` is config.py, errors.py, checkpoint_file.py.
ALLOWED = {
    "base": {"base"},
    "data": {"base", "data"},
    "model": {"base", "data", "model"},
    "interop": {"base", "data", "model", "interop"},  # Hugging Face configs, weights and directories
    "inference": {"base", "data", "model", "interop", "inference"},  # never training: generate.py stays light
    "training": {"base", "data", "model", "interop", "inference", "training"},
}


def layer_of(module: str) -> str:
    """`fragment_llm.data.x` -> data; `fragment_llm.config` -> base."""
    part = module.split(".")[1]
    return part if part in ALLOWED else "base"


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module `path` (a file under `root`) imports, imports inside functions included, as absolute names."""
    package = path.relative_to(root).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = list(package[: len(package) - node.level + 1]) if node.level else []
            base = ".".join([*parent, node.module] if node.module else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from fragment_llm import training`
    return names


def package_modules() -> list[str]:
    """Every module of the package but its __init__ (the public API, which may import anything)."""
    return sorted(p.relative_to(REPO_ROOT).as_posix() for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def higher_layer_imports(path: Path, root: Path) -> list[str]:
    own = layer_of(".".join(path.relative_to(root).with_suffix("").parts))
    return sorted(
        name
        for name in imported_modules(path, root)
        if name.startswith("fragment_llm.") and layer_of(name) not in ALLOWED[own]
    )


@pytest.mark.parametrize("relpath", package_modules())
def test_imports_reach_only_down(relpath):
    path = REPO_ROOT / relpath
    assert not higher_layer_imports(path, REPO_ROOT), f"{relpath} imports from a higher layer"
    if relpath == "fragment_llm/model/gpt.py" or relpath.startswith("fragment_llm/inference/"):
        frameworks = {n for n in imported_modules(path, REPO_ROOT) if n.split(".")[0] == "lightning"}
        assert not frameworks, f"{relpath} imports Lightning: {sorted(frameworks)}"


def test_the_check_finds_relative_and_nested_imports(tmp_path):
    bad = tmp_path / "fragment_llm" / "model" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..training import run\nfrom . import gpt\n\ndef f():\n    import fragment_llm.inference.api\n")
    assert higher_layer_imports(bad, tmp_path) == [
        "fragment_llm.inference.api",
        "fragment_llm.training",
        "fragment_llm.training.run",
    ]
