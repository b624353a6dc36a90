"""The fast encoding path: a `tiktoken` Encoding built from the merges of a byte-level BPE tokenizer.json.

Hugging Face `tokenizers` trains the BPE and owns the file format; `tiktoken` encodes the
same vocabulary several times faster. Both split text with the same pattern (stored in
the file, or GPT-2's, built into `ByteLevel`), and a byte-level BPE whose token ids follow
its merge order gives the same ids whether merges are ranked by pair (HF) or by merged
token (tiktoken). We only use tiktoken after checking that structure, and `agrees`
re-checks the ids on real text: any disagreement sends encoding back to `tokenizers`.
Two steps `tokenizers` takes around its BPE are mirrored in Python when a file asks for
them (Qwen's do): NFC normalization, and added (non-special) tokens matched in the text.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np

# GPT-4's pre-tokenization (tiktoken's cl100k_base): contractions, letter runs with one leading
# non-letter, 1-3 digit groups, punctuation runs, newline runs and other whitespace. One change:
# `\p{N}{1,3}` where tiktoken writes `\p{N}{1,3}+`; Oniguruma (inside `tokenizers`) reads `{1,3}+`
# as "one or more groups of 1-3", not as possessive, and would keep a whole digit run together.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

# GPT-2's split, which `ByteLevel(use_regex=true)` applies without naming it in the file (tokenizers' byte_level.rs).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Texts that exercise the corners of the split pattern and of byte-level BPE.
PROBES = [
    "hello world",
    "  leading and trailing  \n\n\t tabs\t  ",
    "I'm you'LL they'RE it's 'S 'ſ 'K don't",
    "déjà vu — naïve café, 東京, Ελληνικά, emoji 🎉👩‍👩‍👧 end",
    "def f(x):\n    return x ** 2  # comment\r\n",
    "1234567 3.14159 1e-10 ١٢٣ ⅷ",
    "\u00a0\u2003\u3000\u2028\u2029\u0085\u180e\u200b\ufeff mixed spaces",
    "<|endoftext|> is text here",
    "\ufffd\x00\x01 raw bytes",
    "a\n\n\nb  \n  c\t\n\td",
    "e\u0301 A\u030a \u212b \u1100\u1161\u11a8 \ufb01 \u0958 composed or not",
]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from bytes to printable characters, as byte-level BPE vocabularies spell tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def split_pattern(spec: dict[str, Any]) -> str | None:
    """The pattern of a `Split(pattern) + ByteLevel(use_regex=False)` or GPT-2 `ByteLevel` pre-tokenizer, else None."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        return GPT2_PATTERN
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    if (
        split.get("type") != "Split"
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or not isinstance(split.get("pattern", {}).get("Regex"), str)
        or byte_level.get("type") != "ByteLevel"
        or byte_level.get("use_regex")
        or byte_level.get("add_prefix_space")
    ):
        return None
    return split["pattern"]["Regex"]


def tiktoken_encoding(spec: dict[str, Any]):
    """An encoder equivalent to this (already checked) BPE spec, or None when it has another shape.

    A tiktoken Encoding, or a `MirroredEncoding` around one when the file normalizes to NFC or has
    added tokens that are not special (matched in the text by `tokenizers`, never by tiktoken).
    """
    pattern = split_pattern(spec)
    model = spec["model"]
    plain_bpe = not any(model.get(k) for k in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"))
    normalizer = (spec.get("normalizer") or {}).get("type")
    if pattern is None or normalizer not in (None, "NFC") or not plain_bpe or model.get("byte_fallback"):
        return None
    added = spec.get("added_tokens") or []
    specials = {t["content"]: t["id"] for t in added}
    ordinary = {t["content"]: t["id"] for t in added if not t.get("special")}
    if any(t.get(k) for t in added if not t.get("special") for k in ("single_word", "lstrip", "rstrip")):
        return None
    vocab = model["vocab"]
    ranks: dict[bytes, int] = {}
    for token, i in vocab.items():
        if token in specials:
            continue
        try:
            ranks[bytes(UNICODE_TO_BYTE[c] for c in token)] = i
        except KeyError:  # not a byte-level token
            return None
    if any(bytes([b]) not in ranks for b in range(256)):
        return None
    # tiktoken ranks a merge by the id of the token it makes; HF by the merge's position. They agree when
    # ids grow with merge order, as HF's trainer assigns them (files converted from tiktoken, as Llama 3's
    # and Qwen's, list every split of a token into two tokens, one after the other).
    last = -1
    for m in model.get("merges", []):
        a, b = m.split(" ") if isinstance(m, str) else m
        merged = vocab[a + b]
        if merged < last:
            return None
        last = merged
    import tiktoken

    encoding = tiktoken.Encoding("fragment_llm_bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    if normalizer is None and not ordinary:
        return encoding
    return MirroredEncoding(encoding, nfc=normalizer == "NFC", added=ordinary)


class MirroredEncoding:
    """tiktoken, after what `tokenizers` does before its BPE: cut out added tokens, then normalize to NFC.

    Has the three methods of a tiktoken Encoding that `BPETokenizer` calls.
    """

    def __init__(self, encoding, nfc: bool, added: dict[str, int]) -> None:
        self.encoding, self.nfc, self.added = encoding, nfc, added
        longest_first = sorted(added, key=len, reverse=True)  # leftmost-longest, as HF's matcher
        self._added = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if added else None

    def encode_to_numpy(self, text: str, disallowed_special=()) -> np.ndarray:
        parts = self._added.split(text) if self._added is not None else [text]
        arrays = [np.array([self.added[part]], np.uint32) if i % 2 else self._bpe(part) for i, part in enumerate(parts)]
        return np.concatenate(arrays).astype(np.uint32, copy=False) if arrays else np.empty(0, np.uint32)

    def _bpe(self, text: str) -> np.ndarray:
        text = unicodedata.normalize("NFC", text) if self.nfc else text
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode_to_numpy(text).tolist()

    def encode_ordinary_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode_ordinary(t) for t in texts]


def agrees(encoding, hf_tokenizer, texts: list[str], batch: int = 16) -> str | None:
    """The first text on which tiktoken and `tokenizers` give different ids, or None if they agree on all."""
    for start in range(0, len(texts), batch):  # a few at a time: HF's Encoding objects are large
        chunk = texts[start : start + batch]
        for text, theirs in zip(chunk, hf_tokenizer.encode_batch(chunk, add_special_tokens=False), strict=True):
            if encoding.encode_ordinary(text) != theirs.ids:
                return text
    return None
