"""Checks on a tokenizer file before anything parses it for real: it may come from anywhere.

A tokenizer arrives as JSON text from a cache directory, a run directory, a checkpoint
or `tokenizer.path`. It is plain data (never a pickle), but a corrupt or hostile file
could still hold ids that index past the model's embedding table, a vocabulary big
enough to exhaust memory, merges that reference nothing, or a regular expression that
backtracks for hours on every encode. Each is refused here with a message naming the
file, before the Hugging Face parser or the model ever sees it.
"""

from __future__ import annotations

import json
from typing import Any

from fragment_llm.config import MAX_VOCAB_SIZE
from fragment_llm.data.fast_bpe import SPLIT_PATTERN
from fragment_llm.errors import TokenizerError

EOT_TOKEN = "<|endoftext|>"
CHAR_FORMAT = "fragment_llm.char/1"
MAX_TOKENIZER_BYTES = 128 << 20  # a 2**20-token vocabulary with its merges is about 60 MB of JSON


# The text-processing steps a tokenizer file may hold, by field: step type -> settings it must have. They run on
# every encode, so only what the project writes is accepted (tokenizer.py, BPETokenizer.train). A published
# tokenizer (GPT-2, Llama/Qwen) is accepted by adding its steps here and its split regex to SAFE_PATTERNS.
ALLOWED_STEPS: dict[str, dict[str, dict[str, Any]]] = {
    "normalizer": {},
    "pre_tokenizer": {
        "Sequence": {},
        "Split": {"behavior": "Isolated", "invert": False},
        # use_regex: GPT-2's split, compiled into `tokenizers` (not read from the file); older runs' files use it.
        "ByteLevel": {},
    },
    "post_processor": {},
    "decoder": {"ByteLevel": {}},
}
# Regular expressions a Split/Replace step may use: each known to run in time linear in the text.
SAFE_PATTERNS: dict[str, str] = {
    "GPT-4 split (fast_bpe.SPLIT_PATTERN, what BPETokenizer.train writes)": SPLIT_PATTERN,
}
_NESTED_STEPS = ("normalizers", "pretokenizers", "processors", "decoders")  # the children of a Sequence


def check_text_steps(spec: dict[str, Any], source: str) -> None:
    """Refuse normalizers, pre-tokenizers, post-processors and decoders the project does not write (naming
    the field): hostile regexes could hang every encode, unknown steps change what text means."""
    for field, allowed in ALLOWED_STEPS.items():
        _check_step(spec.get(field), field, allowed, source, depth=0)


def _check_step(step: Any, where: str, allowed: dict[str, dict[str, Any]], source: str, depth: int) -> None:
    def bad(why: str) -> TokenizerError:
        return TokenizerError(f"{source}: {where}: {why}; refused (only the steps Fragment_LLM writes are accepted)")

    if step is None and depth == 0:
        return
    if not isinstance(step, dict) or step.get("type") not in allowed or depth > 4:
        kind = step.get("type") if isinstance(step, dict) else type(step).__name__
        raise bad(f"{kind!r} is not an accepted step here")
    for key, value in allowed[step["type"]].items():
        if step.get(key) != value:
            raise bad(f"{step['type']} with {key}={step.get(key)!r} (accepted: {value!r})")
    pattern = step.get("pattern")
    if pattern is not None:
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        plain = isinstance(pattern, dict) and set(pattern) == {"String"} and isinstance(pattern["String"], str)
        if not plain and regex not in SAFE_PATTERNS.values():
            raise bad(f"pattern {str(pattern)[:120]!r} is not a known-safe regular expression")
    for key in _NESTED_STEPS:
        children = step.get(key)
        if children is not None:
            if not isinstance(children, list) or len(children) > 16:
                raise bad(f"{key} must be a short list")
            for i, child in enumerate(children):
                _check_step(child, f"{where}.{key}[{i}]", allowed, source, depth + 1)


def parse_tokenizer_json(text: str, source: str) -> dict[str, Any]:
    if len(text) > MAX_TOKENIZER_BYTES:
        raise TokenizerError(f"{source}: {len(text):,} characters is too large for a tokenizer file; refused")
    try:
        spec = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise TokenizerError(f"{source}: not valid JSON ({str(e)[:200]})") from None
    if not isinstance(spec, dict):
        raise TokenizerError(f"{source}: expected a JSON object")
    return spec


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_bpe_spec(spec: dict[str, Any], source: str, eot_token: str | None = EOT_TOKEN) -> None:
    """Refuse a Hugging Face BPE tokenizer.json whose ids, vocabulary or merges do not hold together.

    `eot_token`: the special token that must be there (None: the caller checks its own special tokens).
    """

    def bad(why: str) -> TokenizerError:
        return TokenizerError(f"{source}: {why}; refused")

    model = spec["model"]
    vocab, merges, added = model.get("vocab"), model.get("merges", []), spec.get("added_tokens") or []
    if not isinstance(vocab, dict) or not isinstance(merges, list) or not isinstance(added, list):
        raise bad("model.vocab must be an object, model.merges and added_tokens lists")
    if len(vocab) + len(added) > MAX_VOCAB_SIZE:
        raise bad(f"vocabulary of {len(vocab) + len(added):,} tokens exceeds the limit of {MAX_VOCAB_SIZE:,}")
    if not all(isinstance(t, str) and _is_int(i) for t, i in vocab.items()):
        raise bad("model.vocab must map token strings to integer ids")
    ids = dict(vocab)
    for t in added:
        if not (isinstance(t, dict) and isinstance(t.get("content"), str) and _is_int(t.get("id"))):
            raise bad("each added token needs a string 'content' and an integer 'id'")
        if ids.setdefault(t["content"], t["id"]) != t["id"]:
            raise bad(f"added token {t['content']!r} has id {t['id']} but the vocabulary says {ids[t['content']]}")
    n = len(ids)
    if len(set(ids.values())) != n:
        raise bad("two tokens share an id")
    if min(ids.values(), default=0) < 0 or max(ids.values(), default=-1) >= n:
        raise bad(f"ids must be exactly 0..{n - 1} (found {min(ids.values())}..{max(ids.values())})")
    if len(merges) >= n:
        raise bad(f"{len(merges):,} merges for {n:,} tokens")
    for m in merges:
        pair = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise bad(f"malformed merge {str(m)[:80]!r}")
        if pair[0] not in vocab or pair[1] not in vocab or pair[0] + pair[1] not in vocab:
            raise bad(f"merge {str(m)[:80]!r} refers to tokens missing from the vocabulary")
    if eot_token is not None and eot_token not in {t["content"] for t in added}:
        raise bad(
            f"no {eot_token} special token (the document separator); for a Hugging Face model's tokenizer, "
            "give its directory (with tokenizer_config.json), which names its own end-of-sequence token"
        )
    if eot_token is not None:  # ours; a Hugging Face model's tokenizer has its own allow-list (hf_tokenizer_check.py)
        check_text_steps(spec, source)


def check_char_spec(spec: dict[str, Any], source: str) -> str:
    """The character list of a character-level tokenizer file, once it is known to be consistent."""
    chars = spec.get("chars")
    if not isinstance(chars, str):
        raise TokenizerError(f"{source}: character tokenizer file has no 'chars' string; refused")
    if len(chars) + 1 > MAX_VOCAB_SIZE:
        raise TokenizerError(f"{source}: {len(chars):,} characters exceeds the limit of {MAX_VOCAB_SIZE:,}; refused")
    if len(set(chars)) != len(chars):
        raise TokenizerError(f"{source}: character tokenizer has duplicate characters; refused")
    specials = spec.get("special_tokens", {EOT_TOKEN: len(chars)})
    if specials != {EOT_TOKEN: len(chars)}:
        raise TokenizerError(f"{source}: special_tokens must be {{{EOT_TOKEN!r}: {len(chars)}}}; refused")
    return chars
