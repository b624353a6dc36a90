"""Each stage imports only what it needs: the data stages run without torch, generation without Lightning."""

from __future__ import annotations

import json

from tests.conftest import REPO_ROOT, run_python

PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("entry", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))  # its imports; main() is not called
print(json.dumps({name: name in sys.modules for name in ("torch", "lightning", "tensorboard")}))
"""


def _imports_of(script: str) -> dict[str, bool]:
    proc = run_python(["-c", PROBE, str(REPO_ROOT / script)], cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_prepare_and_its_encoder_processes_load_no_torch():
    # The encoder workers are forked from prepare.py's process, so they hold what it imported: no torch.
    assert _imports_of("prepare.py") == {"torch": False, "lightning": False, "tensorboard": False}


def test_generate_loads_no_training_framework():
    assert _imports_of("generate.py") == {"torch": True, "lightning": False, "tensorboard": False}


def test_the_package_api_loads_on_first_use():
    code = (
        "import sys, fragment_llm; assert 'torch' not in sys.modules; "
        "from fragment_llm import load_model, LoadedModel; assert 'torch' in sys.modules; print(load_model.__name__)"
    )
    proc = run_python(["-c", code], cwd=REPO_ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "load_model", proc.stderr
