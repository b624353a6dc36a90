"""A Hugging Face model directory, read without trusting it: config.json, then the safetensors headers, then tensors.

Order of checks, all before any model is built:
1. config.json: size-limited JSON, mapped to our GPTConfig by hf_config (unknown families, rope
   scaling, sliding windows, absurd sizes refused by field).
2. The weight files: `model.safetensors`, else the shards `model.safetensors.index.json` names
   (plain file names inside the directory). Pickled weights (`pytorch_model.bin`, `.pt`, `.pth`)
   are never opened: loading a pickle can run code.
3. Every header's names, dtypes and shapes against what the config implies (hf_weights.hf_shapes,
   computed on the meta device): a missing, unexpected or misshapen tensor is refused by name.
   The safetensors library itself refuses a header whose byte ranges disagree with its shapes.
Only then are tensors read, one at a time, and upcast to float32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fragment_llm.errors import CheckpointError
from fragment_llm.interop.hf_config import from_hf_config
from fragment_llm.interop.hf_weights import canonical_name, from_hf, hf_shapes, ignorable
from fragment_llm.model.gpt import GPT, GPTConfig
from fragment_llm.small_files import read_inside

log = logging.getLogger(__name__)

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
MAX_JSON_BYTES = 16 << 20  # an index of a 1000-shard model is a few MB
FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")  # upcast (or cast) to float32; anything else is quantized
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def is_hf_model_dir(path: Path) -> bool:
    """A directory with a config.json (our run directories have config.yaml and checkpoints/)."""
    return path.is_dir() and (path / CONFIG).is_file()


@dataclass
class HFModelDir:
    """An opened and checked model directory: its family, full-context config and where each tensor lives."""

    path: Path
    family: str
    config: GPTConfig  # block_size: the model's full context (n_positions / max_position_embeddings)
    tensors: dict[str, tuple[Path, str]]  # canonical name -> (file, name inside the file)

    @classmethod
    def open(cls, path: str | Path) -> HFModelDir:
        path = Path(path).expanduser().resolve()
        if not path.is_dir():
            raise CheckpointError(f"{path}: not a directory (a Hugging Face model directory has config.json)")
        family, config = from_hf_config(read_json(path / CONFIG), str(path / CONFIG))
        tensors = _check_headers(path, family, config, _weight_files(path))
        return cls(path, family, config, tensors)

    def gpt_config(self, block_size: int | None = None, dropout: float = 0.0) -> GPTConfig:
        """The config of our model of it, with a context of `block_size` tokens (None: the model's own)."""
        context = self.config.block_size
        if block_size is not None and block_size > context:
            key = "n_positions" if self.family == "gpt2" else "max_position_embeddings"
            raise CheckpointError(
                f"model.block_size={block_size}: longer than the context of {self.path} ({key}={context}). "
                f"Use model.block_size={context} or less"
            )
        return dataclasses.replace(self.config, block_size=block_size or context, dropout=dropout)

    def state_dict(self, config: GPTConfig) -> dict[str, torch.Tensor]:
        """Our float32 state dict for `config` (from gpt_config), each tensor read once."""
        with contextlib.ExitStack() as stack:
            handles = {f: stack.enter_context(_open(f)) for f in sorted({f for f, _ in self.tensors.values()})}

            def read(name: str) -> torch.Tensor:
                file, key = self.tensors[name]
                return handles[file].get_tensor(key).to(torch.float32)

            return from_hf(read, config, self.family)

    def load_model(self, block_size: int | None = None) -> GPT:
        """Our GPT with these weights (CPU, float32, eval mode)."""
        config = self.gpt_config(block_size)
        model = GPT(config)
        model.load_state_dict(self.state_dict(config))  # every key checked by _check_headers already
        return model.eval()


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_inside(path, MAX_JSON_BYTES).decode("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing; a Hugging Face model directory has one") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({str(e)[:200]}); not loaded") from None


def _weight_files(path: Path) -> dict[Path, set[str] | None]:
    """Each safetensors file, with the tensors the index places in it (None: a single file, no index)."""
    if (path / SINGLE).is_file():
        return {_inside(path, SINGLE, path / SINGLE): None}
    if (path / INDEX).is_file():
        index = read_json(path / INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{path / INDEX}: no weight_map object; not loaded")
        files: dict[Path, set[str]] = {}
        for name, file in weight_map.items():
            if not isinstance(file, str) or not file.endswith(".safetensors") or "/" in file or "\\" in file:
                raise CheckpointError(f"{path / INDEX}: {str(name)[:80]} -> {str(file)[:80]!r}: not a safetensors "
                                      "file name in this directory; not loaded")  # fmt: skip
            files.setdefault(_inside(path, INDEX, path / file), set()).add(name)
        return files
    pickles = sorted({p.name for pattern in PICKLES for p in path.glob(pattern)})
    if pickles:
        raise CheckpointError(
            f"{path}: only pickled weights ({', '.join(pickles[:4])}), which can run code when loaded: refused, "
            "never opened. On a machine you trust, convert them with transformers: "
            "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(new_dir) writes model.safetensors"
        )
    raise CheckpointError(f"{path}: no {SINGLE} and no {INDEX}; nothing to load")


def _inside(root: Path, named_by: str, file: Path) -> Path:
    resolved = file.resolve()
    if not resolved.is_file():
        raise CheckpointError(f"{root / named_by}: names {file.name}, which is not a file; not loaded")
    if not resolved.is_relative_to(root):
        raise CheckpointError(
            f"{file}: a link to {resolved}, outside {root}; not loaded. (A Hugging Face cache snapshot links "
            "to its blobs: download with `hf download ... --local-dir <dir>` for a directory of real files.)"
        )
    return resolved


def _open(file: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as e:  # SafetensorError: a header that is not JSON, or disagrees with the file's bytes
        raise CheckpointError(f"{file}: not a valid safetensors file ({str(e)[:200]}); not loaded") from None


def _check_headers(
    path: Path, family: str, config: GPTConfig, files: dict[Path, set[str] | None]
) -> dict[str, tuple[Path, str]]:
    """Where each expected tensor is; refuses a missing, duplicated, unexpected, misshapen or quantized one."""
    expected = hf_shapes(config, family)
    # A tied head may be saved anyway (older transformers did): never read, but it must have the embedding's shape.
    optional = {"lm_head.weight": (config.vocab_size, config.n_embd)} if config.tie_embeddings else {}
    found: dict[str, tuple[Path, str]] = {}
    for file, listed in files.items():
        with _open(file) as f:
            for key in f.keys():
                if listed is not None and key not in listed:
                    raise CheckpointError(f"{file}: holds {key[:120]}, which {INDEX} does not place there; not loaded")
                name = canonical_name(key, family)
                if ignorable(name, family):
                    continue
                slice_ = f.get_slice(key)
                shape, dtype = tuple(slice_.get_shape()), slice_.get_dtype()
                want = expected.get(name, optional.get(name))
                if want is None:
                    raise CheckpointError(f"{file}: unexpected tensor {key[:120]} for this {family} config.json; "
                                          "not loaded")  # fmt: skip
                if shape != want:
                    raise CheckpointError(
                        f"{file}: {key[:120]} has shape {list(shape)} but config.json implies {list(want)}; not loaded"
                    )
                if dtype not in FLOAT_DTYPES:
                    raise CheckpointError(f"{file}: {key[:120]} is {dtype} (quantized?); only float weights load")
                if name in found:
                    raise CheckpointError(f"{file}: {key[:120]} is also in {found[name][0].name}; not loaded")
                found[name] = (file, key)
            if listed is not None and (absent := listed - set(f.keys())):
                raise CheckpointError(f"{path / INDEX}: places {sorted(absent)[0][:120]} in {file.name}, "
                                      "which does not hold it; not loaded")  # fmt: skip
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} tensor(s) that config.json implies are missing, e.g. {missing[0]}; not loaded"
        )
    log.info("%s: %s model, %d tensors in %d file(s), shapes checked", path, family, len(found), len(files))
    return found
