"""Text cleaning: bytes in, normalized text out, every change counted.

Deterministic and local: each rule looks at a character and its immediate neighbours
only, so cleaning a long document piece by piece (cut after a newline, see
`readers.safe_cut`) gives exactly the text that cleaning it whole would.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# C0/C1 control characters except \t (0x09) and \n (0x0a); \r is handled by newline normalization first.
_CONTROL_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACE_RUNS = re.compile(r"[ \t]{2,}|\t")  # a tab alone also becomes one space
_TRAILING_SPACES = re.compile(r"[ \t]+\n")
_BLANK_LINE_RUNS = re.compile(r"\n{3,}")
_REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class CleaningRules:
    nfc: bool = True
    normalize_newlines: bool = True
    remove_control_chars: bool = True
    collapse_whitespace: bool = False

    @classmethod
    def from_config(cls, cleaning: dict) -> CleaningRules:
        return cls(**{k: bool(cleaning[k]) for k in cls.__dataclass_fields__})


@dataclass
class CleaningCounts:
    invalid_bytes_replaced: int = 0  # invalid UTF-8 sequences, each replaced by U+FFFD
    control_chars_removed: int = 0

    def add(self, other: CleaningCounts) -> None:
        self.invalid_bytes_replaced += other.invalid_bytes_replaced
        self.control_chars_removed += other.control_chars_removed


def decode_utf8(raw: bytes, counts: CleaningCounts, strip_bom: bool = True) -> str:
    """Decode UTF-8; invalid bytes become U+FFFD and are counted (U+FFFD already in the source is not)."""
    text = raw.decode("utf-8", errors="replace")
    if _REPLACEMENT in text:
        counts.invalid_bytes_replaced += text.count(_REPLACEMENT) - raw.count(_REPLACEMENT.encode())
    if strip_bom and text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is encoding metadata, not content
    return text


def clean_text(text: str, rules: CleaningRules, counts: CleaningCounts) -> str:
    if rules.normalize_newlines and "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if rules.remove_control_chars:
        text, n = _CONTROL_CHARS.subn("", text)
        counts.control_chars_removed += n
    if rules.nfc and not text.isascii() and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if rules.collapse_whitespace:
        text = _TRAILING_SPACES.sub("\n", text)
        text = _SPACE_RUNS.sub(" ", text)
        text = _BLANK_LINE_RUNS.sub("\n\n", text)
    return text


def clean_bytes(raw: bytes, rules: CleaningRules, counts: CleaningCounts, strip_bom: bool = True) -> str:
    return clean_text(decode_utf8(raw, counts, strip_bom), rules, counts)
