"""Our tokenizers for `transformers`: tokenizer.json, tokenizer_config.json and special_tokens_map.json.

`AutoTokenizer.from_pretrained(dir)` loads them offline, with no custom code.
tokenizer_config.json names the generic fast tokenizer (`PreTrainedTokenizerFast`), which
runs tokenizer.json as it is (a model's own class, e.g. GPT2TokenizerFast, could rebuild
it with its own pre-tokenizer and give other ids), and the special tokens by role. It gives
our ids: with `add_special_tokens=False` those of `encode(text, allowed_special="all")`;
by default, as transformers' pipelines call it, `doc_prefix_ids` first (an imported
Llama's BOS; nothing for ours).

A BPE tokenizer is already in Hugging Face's format. A character-level one becomes a
WordLevel model over single characters, a pre-tokenizer that isolates every character and
a decoder that joins them without spaces (`Fuse`). A character outside its vocabulary makes
transformers raise an error (WordLevel's "Missing [UNK] token"), as our CharTokenizer
refuses it: there is no id to give it. That layout, and only it, is read back as a
CharTokenizer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fragment_llm.config import MAX_VOCAB_SIZE
from fragment_llm.data.hf_tokenizer_check import CHAR_SPLIT_PATTERN
from fragment_llm.data.tokenizer import EOT_TOKEN, CharTokenizer, Tokenizer, atomic_write_text
from fragment_llm.errors import TokenizerError

HF_TOKENIZER_CLASS = "PreTrainedTokenizerFast"
_PLAIN_ADDED_TOKEN = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
_CHAR_PRE_TOKENIZER = {
    "type": "Split",
    "pattern": {"Regex": CHAR_SPLIT_PATTERN},
    "behavior": "Isolated",
    "invert": False,
}


def export_tokenizer(tokenizer: Tokenizer, out_dir: str | os.PathLike, *, block_size: int) -> dict[str, int | None]:
    """Write the tokenizer into `out_dir` for transformers; the special-token ids for config.json and
    generation_config.json: {"bos_token_id", "eos_token_id", "pad_token_id"} (None where there is none)."""
    out = Path(out_dir)
    text = char_tokenizer_json(tokenizer) if isinstance(tokenizer, CharTokenizer) else tokenizer.hf_json()
    named = {f"{role}_token": name for role, name in tokenizer.roles.items() if name is not None}
    config = {
        "tokenizer_class": HF_TOKENIZER_CLASS,
        **named,
        "model_max_length": block_size,
        "clean_up_tokenization_spaces": False,  # decode gives the text back, spaces before punctuation included
    }
    atomic_write_text(out / "tokenizer.json", text)
    atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "special_tokens_map.json", json.dumps(named, indent=2, ensure_ascii=False) + "\n")
    ids = tokenizer.role_ids
    return {f"{role}_token_id": ids[role] for role in ("bos", "eos", "pad")}


def char_tokenizer_json(tokenizer: CharTokenizer) -> str:
    """The character-level tokenizer as a Hugging Face tokenizer.json (same ids, decodes without spaces)."""
    vocab = {c: i for i, c in enumerate(tokenizer.chars)}
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": tokenizer.eot_id, "content": EOT_TOKEN, "special": True, **_PLAIN_ADDED_TOKEN}],
        "normalizer": None,
        "pre_tokenizer": _CHAR_PRE_TOKENIZER,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": {**vocab, EOT_TOKEN: tokenizer.eot_id}, "unk_token": "<unk>"},
    }
    return json.dumps(spec, ensure_ascii=False)


def char_from_wordlevel(spec: dict[str, Any], source: str) -> CharTokenizer:
    """The CharTokenizer that `char_tokenizer_json` wrote; any other WordLevel file is refused."""
    model = spec.get("model") or {}
    vocab, added = model.get("vocab"), spec.get("added_tokens")
    layout = (
        isinstance(vocab, dict)
        and 1 <= len(vocab) <= MAX_VOCAB_SIZE
        and all(type(i) is int for i in vocab.values())
        and spec.get("normalizer") is None
        and spec.get("pre_tokenizer") == _CHAR_PRE_TOKENIZER
        and spec.get("decoder") == {"type": "Fuse"}
        and spec.get("post_processor") is None
        and isinstance(added, list)
        and len(added) == 1
        and isinstance(added[0], dict)
        and added[0].get("content") == EOT_TOKEN
        and added[0].get("special") is True
        and vocab.get(EOT_TOKEN) == added[0].get("id") == len(vocab) - 1
    )
    if not layout:
        raise TokenizerError(
            f"{source}: a WordLevel tokenizer is read only in the layout of our character-level export "
            f"(one token per character, then {EOT_TOKEN}); refused"
        )
    by_id = sorted((i, t) for t, i in vocab.items() if t != EOT_TOKEN)
    if [i for i, _ in by_id] != list(range(len(vocab) - 1)) or any(len(t) != 1 for _, t in by_id):
        raise TokenizerError(f"{source}: WordLevel tokens must be single characters with ids 0..{len(vocab) - 2}")
    return CharTokenizer("".join(t for _, t in by_id))
