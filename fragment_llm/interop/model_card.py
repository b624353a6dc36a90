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
    """The facts a model card states, from an opened training checkpoint (plain data only)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    run = hparams.get("run_config") if isinstance(hparams.get("run_config"), dict) else {}
    losses = [
        state.get("best") if "best" in state else state.get("best_model_score")
        for state in (checkpoint.get("callbacks") or {}).values()
        if isinstance(state, dict)
    ]
    losses = [float(x) for x in losses if x is not None and math.isfinite(float(x))]
    datamodule = checkpoint.get("TextDataModule") or {}
    return {
        "step": checkpoint.get("global_step"),
        "val_loss": min(losses) if losses else None,
        "data_path": (run.get("data") or {}).get("path"),
        "init_from": run.get("init_from"),
        "corpus": datamodule.get("corpus") if isinstance(datamodule, dict) else None,
    }


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
        f"- Optimizer steps: {record['step'] if record.get('step') is not None else 'not recorded'}",
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
    if not isinstance(corpus, dict):
        return [f"- Corpus: {where} (size not recorded in the checkpoint)"]
    tokens, docs = corpus.get("tokens") or {}, corpus.get("documents") or {}
    return [
        f"- Corpus: {where}: {corpus.get('files', '?')} file(s), {corpus.get('bytes', 0) / 1e6:.1f} MB, "
        f"{sum(docs.values()) if docs else '?'} documents after cleaning and deduplication",
        f"- Tokens: {tokens.get('train', 0):,} for training, {tokens.get('val', 0):,} held out for validation",
    ]
