"""The allow-list for a Hugging Face tokenizer.json's pipeline: which components and regex patterns we run.

A tokenizer.json names its normalizer, pre-tokenizer, post-processor and decoder, and some
of them carry a regular expression that the `tokenizers` library compiles and runs over
every text. From a hostile file, a pattern could backtrack for hours, and a `Replace`
could turn each space into megabytes. So only the component types below are accepted,
only the published patterns of the tokenizer families we import (each in daily use over
huge corpora, and linear on long runs of spaces, newlines and digits), string arguments
are short, and the ids a post-processor adds must be tokens of the vocabulary. Anything
else is refused with the file and the field named.
"""

from __future__ import annotations

from typing import Any

from fragment_llm.data.fast_bpe import SPLIT_PATTERN
from fragment_llm.errors import TokenizerError

# The `Split` pre-tokenizer patterns we run, by family. GPT-2's (and SmolLM2's) split has no entry: it is
# built into `ByteLevel(use_regex=true)` (fast_bpe.GPT2_PATTERN), the file carries no pattern.
LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)  # Llama 3, 3.1, 3.2 (tiktoken's cl100k_base pattern as published)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)  # Qwen2, Qwen2.5, Qwen3: Llama 3's with single digits
CHAR_SPLIT_PATTERN = "(?m:.)"  # every character alone (Oniguruma's `m`: `.` matches newlines too)
KNOWN_SPLIT_PATTERNS: dict[str, str] = {
    "gpt4": SPLIT_PATTERN,  # the BPE we train (GPT-4's, see fast_bpe)
    "llama3": LLAMA3_PATTERN,
    "qwen2": QWEN2_PATTERN,
    "char": CHAR_SPLIT_PATTERN,  # our character-level export
}

# Component types by field; none of them runs a pattern of the file's choosing except `Split` and `Replace`.
ALLOWED_COMPONENTS: dict[str, frozenset[str]] = {
    "normalizer": frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "Prepend", "Replace", "Sequence"}),
    "pre_tokenizer": frozenset(
        {"ByteLevel", "Split", "Metaspace", "Digits", "Whitespace", "WhitespaceSplit", "Punctuation", "Sequence"}
    ),
    "post_processor": frozenset({"ByteLevel", "TemplateProcessing", "Sequence"}),
    "decoder": frozenset({"ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip", "Sequence"}),
}
MAX_STEPS = 32  # components in one field, nested sequences included
MAX_ARGUMENT_CHARS = 16  # a Replace's content, a Prepend's text, a Metaspace replacement


def check_hf_components(spec: dict[str, Any], source: str, vocab: dict[str, int]) -> None:
    """Refuse a tokenizer.json whose pipeline uses a component, pattern or argument not allowed above.

    `vocab`: every token (model vocabulary and added tokens) with its id, already checked.
    """
    for field, allowed in ALLOWED_COMPONENTS.items():
        steps = _flatten(spec.get(field), f"{source}: {field}", SEQUENCE_KEYS[field])
        for where, step in steps:
            kind = step.get("type")
            if kind not in allowed:
                raise TokenizerError(
                    f"{where}: component type {kind!r} is not supported (allowed: {', '.join(sorted(allowed))}); "
                    "refused"
                )
            _check_step(step, where, vocab)


# The key under which `tokenizers` reads a Sequence's children, per field. A Sequence is checked by that
# key alone and may carry no other: an empty decoy list under another key must not hide the real steps.
SEQUENCE_KEYS = {"normalizer": "normalizers", "pre_tokenizer": "pretokenizers", "post_processor": "processors",
                 "decoder": "decoders"}  # fmt: skip


def _flatten(node: Any, where: str, key: str, depth: int = 0) -> list[tuple[str, dict]]:
    """The steps of one field (null: none), sequences opened, each with where it sits in the file."""
    if node is None:
        return []
    if not isinstance(node, dict) or depth > 4:
        raise TokenizerError(f"{where}: expected a component object (at most 4 nested sequences); refused")
    decoys = sorted(k for k in SEQUENCE_KEYS.values() if k in node and (k != key or node.get("type") != "Sequence"))
    if decoys:
        raise TokenizerError(f"{where}: {', '.join(decoys)} does not belong in this component; refused")
    children = node.get(key)
    if node.get("type") != "Sequence":
        return [(where, node)]
    if not isinstance(children, list) or len(children) > MAX_STEPS:
        raise TokenizerError(f"{where}: a Sequence needs a list of at most {MAX_STEPS} steps; refused")
    steps = [s for i, child in enumerate(children) for s in _flatten(child, f"{where}[{i}]", key, depth + 1)]
    if len(steps) > MAX_STEPS:
        raise TokenizerError(f"{where}: more than {MAX_STEPS} steps; refused")
    return steps


def _check_step(step: dict, where: str, vocab: dict[str, int]) -> None:
    kind = step["type"]
    if kind in ("Split", "Replace"):
        pattern = step.get("pattern")
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        literal = pattern.get("String") if isinstance(pattern, dict) else None
        if regex is not None and regex not in KNOWN_SPLIT_PATTERNS.values():
            raise TokenizerError(
                f"{where}: the {kind} pattern {regex[:120]!r} is not one we know to be safe to run "
                f"(known: {', '.join(KNOWN_SPLIT_PATTERNS)} families); refused"
            )
        if not (isinstance(regex, str) or (isinstance(literal, str) and 0 < len(literal) <= MAX_ARGUMENT_CHARS)):
            raise TokenizerError(f"{where}: {kind} needs a known Regex or a short String pattern; refused")
    for key in ("content", "prepend", "replacement"):
        if key in step and not (isinstance(step[key], str) and len(step[key]) <= MAX_ARGUMENT_CHARS):
            raise TokenizerError(
                f"{where}: {kind}.{key} must be a string of at most {MAX_ARGUMENT_CHARS} characters; refused"
            )
    if kind == "TemplateProcessing":
        tokens = step.get("special_tokens")
        if not isinstance(tokens, dict) or len(tokens) > MAX_STEPS:
            raise TokenizerError(f"{where}: TemplateProcessing.special_tokens must be a small object; refused")
        for name, entry in tokens.items():
            ids = entry.get("ids") if isinstance(entry, dict) else None
            names = entry.get("tokens") if isinstance(entry, dict) else None
            if not (
                isinstance(ids, list)
                and isinstance(names, list)
                and 0 < len(ids) == len(names) <= MAX_STEPS
                and all(
                    type(i) is int and isinstance(t, str) and vocab.get(t) == i for t, i in zip(names, ids, strict=True)
                )
            ):
                raise TokenizerError(
                    f"{where}: TemplateProcessing adds {str(name)[:40]!r} with ids that are not its tokens' ids "
                    f"in the vocabulary ({str(ids)[:80]}); refused"
                )
