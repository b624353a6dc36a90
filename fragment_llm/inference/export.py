"""`export.py`: a trained model as a directory that `transformers` loads offline, with no custom code.

    config.json              GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM (hf_config.family_of)
    model.safetensors        the weights in that architecture's names and layout (hf_weights.to_hf)
    generation_config.json   bos/eos/pad token ids (greedy decoding unless the caller asks otherwise)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (data/tokenizer_export.py)
    README.md                a model card (model_card.py)

The checkpoint is read through the inference loader (weights_only, never a pickle). Everything
is written into a hidden temporary directory beside `out`, which is renamed into place last: an
interrupted export leaves no half-written model. An existing non-empty `out` is replaced only
with overwrite=true, and only if it holds a model export (a config.json), never the run itself.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.data.tokenizer import Tokenizer
from fragment_llm.errors import ConfigError, ExportError
from fragment_llm.interop.hf_config import family_of, to_hf_config
from fragment_llm.interop.hf_dir import HFModelDir, is_hf_model_dir
from fragment_llm.interop.hf_weights import to_hf
from fragment_llm.interop.model_card import checkpoint_record, model_card
from fragment_llm.model.gpt import GPT

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def export_model(ckpt: str | os.PathLike, out: str | os.PathLike, dtype: str = "float32",
                 overwrite: bool = False, command: str = "") -> Path:  # fmt: skip
    """Write the model of `ckpt` (a run directory or a .ckpt file) to the directory `out`; return its path."""
    from fragment_llm.inference.loading import model_from_checkpoint, resolve_checkpoint

    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: not supported. Use {' or '.join(DTYPES)}")
    source = resolve_checkpoint(ckpt)
    out = Path(out).expanduser().resolve()
    _check_out(out, source, overwrite)
    if is_hf_model_dir(source):  # re-export a model directory (e.g. to change dtype)
        from fragment_llm.data.tokenizer import load_tokenizer

        hf = HFModelDir.open(source)
        model, tokenizer, record = hf.load_model(), load_tokenizer(source), {}
    else:
        checkpoint = load_checkpoint_safely(source)
        model, tokenizer = model_from_checkpoint(checkpoint, source)
        record = checkpoint_record(checkpoint)
        del checkpoint  # the optimizer state can be twice the model
    family = family_of(model.config)  # refuses a switch no transformers architecture has, before writing
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_model_dir(staging, model, tokenizer, family, DTYPES[dtype])
        card = model_card(out.name, family, model.config, model.num_params(non_embedding=False), tokenizer, record,
                          command or f"python export.py ckpt={source} out={out} dtype={dtype}")  # fmt: skip
        (staging / "README.md").write_text(card, encoding="utf-8")
        _install(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("Exported %s as %s (%s) to %s", source, family, dtype, out)
    return out


def write_model_dir(directory: Path, model: GPT, tokenizer: Tokenizer, family: str, dtype: torch.dtype) -> None:
    """config.json, model.safetensors, generation_config.json and the tokenizer files, into `directory`."""
    from safetensors.torch import save_file

    from fragment_llm.data.tokenizer_export import export_tokenizer

    token_ids = export_tokenizer(tokenizer, directory, block_size=model.config.block_size)
    dtype_name = str(dtype).removeprefix("torch.")
    config = to_hf_config(model.config, family, token_ids, dtype_name)
    tensors = {k: v.detach().to(device="cpu", dtype=dtype) for k, v in
               to_hf(model.state_dict(), model.config, family).items()}  # fmt: skip
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    generation = {k: v for k, v in token_ids.items() if v is not None}
    for name, data in (("config.json", config), ("generation_config.json", generation)):
        (directory / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _check_out(out: Path, source: Path, overwrite: bool) -> None:
    if source == out or source.is_relative_to(out):
        raise ConfigError(f"out={out}: holds the model being exported ({source}); choose another directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out}: a file is there; choose a directory path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"out={out}: not empty. Choose a new directory, or pass overwrite=true to replace it")
        if not (out / "config.json").is_file():
            raise ExportError(f"out={out}: not a model directory (no config.json), so it is not replaced even with "
                              "overwrite=true; choose a new directory")  # fmt: skip


def _install(staging: Path, out: Path) -> None:
    """Rename the finished export into place; a replaced directory is moved aside first, then removed."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp made it private; an export is an ordinary directory
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(staging, out)
    if old is not None:
        shutil.rmtree(old)
