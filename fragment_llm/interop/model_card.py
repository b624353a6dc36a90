"""The README.md of an exported model: what it is, what it was trained on, how well, and how it was made.

Everything comes from the checkpoint's own record (its run config, step, validation loss and
the corpus summary the data module saves); what the checkpoint does not record is said to be
unknown rather than guessed.
"""

from __future__ import annotations

import math
from typing import Any

from fragment_llm.data.tokenizer import Tokenizer
from fragment_llm.interop.hf_config import ARCHITECTURES
from fragment_llm.model.gpt import GPTConfig


def checkpoint_record(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The facts a model card states, from an opened training checkpoint (plain data; anything odd is left out)."""
    callbacks = _get(checkpoint, "callbacks")
    states = callbacks.values() if isinstance(callbacks, dict) else []
    losses = [_number(_get(s, "best") if "best" in s else _get(s, "best_model_score")) for s in states
              if isinstance(s, dict)]  # fmt: skip
    losses = [x for x in losses if x is not None]
    corpus, run = _get(checkpoint, "TextDataModule", "corpus"), _get(checkpoint, "hyper_parameters", "run_config")
    documents = _get(corpus, "documents")
    return {
        "step": _number(checkpoint.get("global_step")),
        "val_loss": min(losses) if losses else None,
        "data_path": _get(run, "data", "path"),
        "init_from": _get(run, "init_from"),
        "corpus": None
        if not isinstance(corpus, dict)
        else {
            "files": _number(corpus.get("files")),
            "bytes": _number(corpus.get("bytes")),
            "documents": sum(_number(n) or 0 for n in documents.values()) if isinstance(documents, dict) else None,
            "train": _number(_get(corpus, "tokens", "train")),
            "val": _number(_get(corpus, "tokens", "val")),
        },
    }


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _number(x: Any) -> float | None:
    """A finite number from a checkpoint's record (a float, an int or a 0-d tensor), else None."""
    try:
        value = float(x)
    except (TypeError, ValueError, RuntimeError):
        return None
    return value if math.isfinite(value) else None


def model_card(
    name: str, family: str, config: GPTConfig, n_params: int, tokenizer: Tokenizer, record: dict, command: str
) -> str:
    origin = f"fine-tuned from `{record['init_from']}`" if record.get("init_from") else "trained from random weights"
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [fragment-llm]",
        "---",
        f"# {name}",
        "",
        f"A `{ARCHITECTURES[family]}` language model ({n_params / 1e6:.1f}M parameters, a context of "
        f"{config.block_size} tokens, a {tokenizer.kind} tokenizer of {tokenizer.vocab_size:,} tokens), "
        f"{origin} with Fragment_LLM.",
        "",
        "## Training data",
        "",
        *_data_lines(record),
        "",
        "## Training",
        "",
        f"- Optimizer steps: {record['step']:.0f}" if record.get("step") is not None else "- Optimizer steps: ?",
        "- Best validation loss: "
        + (f"{record['val_loss']:.4f} nats per token" if record.get("val_loss") is not None else "not recorded"),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        'ids = tokenizer("Once upon a time", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=50)[0]))",
        "```",
        "",
        "## How it was made",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def _data_lines(record: dict) -> list[str]:
    corpus = record.get("corpus")
    where = f"`{record['data_path']}`" if record.get("data_path") else "not recorded"
    if not corpus:
        return [f"- Corpus: {where} (its size is not recorded in the checkpoint)"]

    def count(key: str) -> str:
        return f"{corpus[key]:,.0f}" if corpus.get(key) is not None else "?"

    size = f"{corpus['bytes'] / 1e6:.1f} MB" if corpus.get("bytes") is not None else "? MB"
    return [
        f"- Corpus: {where}: {count('files')} file(s), {size}, {count('documents')} documents after cleaning "
        "and deduplication",
        f"- Tokens: {count('train')} for training, {count('val')} held out for validation",
    ]
