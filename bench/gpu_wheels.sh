#!/usr/bin/env bash
# Wheels of what the GPU machine's Python lacks (it has torch, lightning, tokenizers, tiktoken, tensorboard,
# pyarrow, but no Hydra, and no network), into .whl/ at the repository root (git-ignored), for
# bench/gpu_check.py to install there. Run on a machine with access to PyPI; see BENCHMARKS.md, "GPU check".
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-path info/exclude)"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 -d .whl hydra-core==1.3.2 omegaconf==2.3.0
# PyPI has antlr4-python3-runtime 4.9.3 (Hydra's parser) as a source archive only: a pure-Python wheel, built here.
python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
ls -l .whl
