"""Tokenizers: byte-level BPE (trained with Hugging Face `tokenizers`) and character-level.

Both are stored as one JSON file, `tokenizer.json` (never a pickle). A BPE file is Hugging
Face's own format, so `tokenizers.Tokenizer.from_file` reads it and gives the same ids
(set `encode_special_tokens = True` on it to treat special-token text as we do). BPE
splits text with GPT-4's pattern, stored in the file, and encodes with `tiktoken` built
from the same merges (see fast_bpe.py). Documents are separated by `<|endoftext|>`.
A pretrained model's tokenizer (a Hugging Face model directory) is the third kind, "hf":
see hf_tokenizer.py.

Special tokens have reserved ids (0, 1, ... in the order configured for BPE; the last id
for character-level). User text never produces one: `encode` treats special-token text
as ordinary text unless the caller names it in `allowed_special`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from fragment_llm.data import fast_bpe
from fragment_llm.data.tokenizer_file import (
    CHAR_FORMAT,
    EOT_TOKEN,
    MAX_TOKENIZER_BYTES,
    check_bpe_spec,
    check_char_spec,
    parse_tokenizer_json,
)
from fragment_llm.errors import TokenizerError

log = logging.getLogger(__name__)

__all__ = ["EOT_TOKEN", "BPETokenizer", "CharTokenizer", "Tokenizer", "load_tokenizer", "train_tokenizer"]


class Tokenizer(ABC):
    vocab_size: int
    eot_id: int  # the document separator (the end-of-sequence token)
    kind: str
    special_tokens: dict[str, int]
    doc_prefix_ids: tuple[int, ...] = ()  # put before each document (a BOS, for tokenizers that add one)

    def encode(self, text: str, allowed_special: Collection[str] | Literal["all"] = ()) -> list[int]:
        """Token ids of `text`; special-token text becomes its special id only if named in `allowed_special`."""
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if not allowed:
            return self.encode_ordinary(text)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise TokenizerError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        pattern = "(" + "|".join(re.escape(s) for s in sorted(allowed, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for i, part in enumerate(re.split(pattern, text)):
            ids.extend([self.special_tokens[part]] if i % 2 else self._encode_segment(part, first=i == 0))
        return ids

    def _encode_segment(self, text: str, first: bool) -> list[int]:
        """The text between special tokens (`first`: at the start of the whole text)."""
        return self.encode_ordinary(text)

    @abstractmethod
    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of `text`, all of it treated as ordinary text."""

    def encode_array(self, text: str) -> np.ndarray:
        """`encode_ordinary` as a uint32 array (the bulk path: no Python list in between)."""
        return np.asarray(self.encode_ordinary(text), dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode_ordinary(t) for t in texts]

    def encode_piece(self, text: str, doc_start: bool = True) -> np.ndarray:
        """`encode_array` of a piece of a document cut at a safe point (`readers.safe_cut`).

        `doc_start=False`: the piece continues a document, so nothing that a tokenizer puts at the
        start of each text (SentencePiece's "▁") is added.
        """
        return self.encode_array(text)

    @property
    def roles(self) -> dict[str, str | None]:
        """Special tokens by the part they play, as Hugging Face names them (None: this tokenizer has none)."""
        pad = "<|pad|>" if "<|pad|>" in self.special_tokens else None
        return {"bos": EOT_TOKEN, "eos": EOT_TOKEN, "pad": pad, "unk": None}  # GPT-2's convention

    @property
    def role_ids(self) -> dict[str, int | None]:
        return {role: None if name is None else self.special_tokens[name] for role, name in self.roles.items()}

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def to_json(self) -> str: ...

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), self.to_json())


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf_tokenizer, spec: dict | None = None, eot_token: str = EOT_TOKEN) -> None:
        self._tok = hf_tokenizer
        self._tok.encode_special_tokens = True  # special-token text in user input stays text
        self._tok.no_padding()  # a file's padding or truncation settings would change the ids of a batch
        self._tok.no_truncation()
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {t.content: i for i, t in hf_tokenizer.get_added_tokens_decoder().items() if t.special}
        if eot_token not in self.special_tokens:
            raise TokenizerError(f"BPE tokenizer has no {eot_token} special token")
        self.eot_id = self.special_tokens[eot_token]
        self._fast = fast_bpe.tiktoken_encoding(spec if spec is not None else json.loads(self.to_json()))
        if self._fast is not None and fast_bpe.agrees(self._fast, self._tok, fast_bpe.PROBES) is not None:
            self._fast = None

    @property
    def fast(self) -> bool:
        """Whether encoding goes through tiktoken (else through `tokenizers`, several times slower)."""
        return self._fast is not None

    def disable_fast_path(self) -> None:
        self._fast = None

    def verify_fast_path(self, texts: list[str]) -> bool:
        """Check tiktoken against `tokenizers` on `texts`; on any difference, stop using tiktoken."""
        if self._fast is None:
            return False
        bad = fast_bpe.agrees(self._fast, self._tok, texts)
        if bad is not None:
            log.warning("tiktoken and tokenizers disagree on %r; encoding with tokenizers instead", bad[:80])
            self._fast = None
        return self._fast is not None

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        min_frequency: int = 2,
        special_tokens: Sequence[str] = (EOT_TOKEN,),
    ) -> BPETokenizer:
        from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
        from tokenizers import Tokenizer as HFTokenizer

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(fast_bpe.SPLIT_PATTERN), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(special_tokens),  # registered first: ids 0, 1, ... whatever the corpus holds
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text is encodable
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_spec(cls, spec: dict, text: str, source: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        check_bpe_spec(spec, source)
        try:
            hf = HFTokenizer.from_str(text)
        except Exception as e:  # the Rust side raises plain Exception on malformed files
            raise TokenizerError(f"{source}: not a valid BPE tokenizer file ({str(e)[:200]})") from None
        return cls(hf, spec)

    def encode_ordinary(self, text: str) -> list[int]:
        if self._fast is not None:
            return self._fast.encode_ordinary(text)
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        if self._fast is not None:
            return self._fast.encode_to_numpy(text, disallowed_special=())
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._fast is not None:
            return self._fast.encode_ordinary_batch(list(texts))
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        return self._tok.to_str()

    def hf_json(self) -> str:
        """The tokenizer.json that Hugging Face's libraries read (for this kind, the same as `to_json`)."""
        return self._tok.to_str()


class CharTokenizer(Tokenizer):
    """One id per character of the training text (sorted), then `<|endoftext|>`, as nanoGPT's shakespeare_char.

    It can only encode characters it was built with; any other character is refused by name.
    """

    kind = "char"

    def __init__(self, chars: str) -> None:
        if len(set(chars)) != len(chars):
            raise TokenizerError("character tokenizer has duplicate characters")
        self.chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}
        self.eot_id = len(chars)
        self.vocab_size = len(chars) + 1
        self.special_tokens = {EOT_TOKEN: self.eot_id}
        codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(codepoints).astype(np.uint32)
        self._sorted = codepoints[self._order]

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        alphabet: set[str] = set()
        for t in texts:
            alphabet.update(t)
        return cls("".join(sorted(alphabet)))

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        codepoints = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
        pos = np.minimum(np.searchsorted(self._sorted, codepoints), max(len(self._sorted) - 1, 0))
        known = self._sorted[pos] == codepoints if len(self._sorted) else np.zeros(len(codepoints), bool)
        if not known.all():
            c = chr(int(codepoints[np.argmin(known)]))
            raise TokenizerError(
                f"character {c!r} is not in this character-level vocabulary "
                f"({len(self.chars)} characters); remove it from the text"
            )
        return self._order[pos]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == self.eot_id:
                out.append(EOT_TOKEN)
            elif 0 <= i < len(self.chars):
                out.append(self.chars[i])
            else:
                raise TokenizerError(f"token id {i} is outside this vocabulary (size {self.vocab_size})")
        return "".join(out)

    def to_json(self) -> str:
        return json.dumps(
            {"format": CHAR_FORMAT, "chars": self.chars, "special_tokens": {EOT_TOKEN: self.eot_id}}, ensure_ascii=False
        )


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: Sequence[str] = (EOT_TOKEN,),
) -> Tokenizer:
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size, min_frequency, special_tokens)
    if kind == "char":
        return CharTokenizer.train(texts)
    raise TokenizerError(f"tokenizer.kind={kind!r} is not known; use 'bpe' or 'char'")


def tokenizer_from_json(text: str, source: str = "tokenizer") -> Tokenizer:
    """Build a tokenizer from its JSON text (plain data; checked first, nothing is executed or unpickled)."""
    from fragment_llm.data import hf_tokenizer, tokenizer_export

    spec = parse_tokenizer_json(text, source)
    if spec.get("format") == CHAR_FORMAT:
        return CharTokenizer(check_char_spec(spec, source))
    if spec.get("format") == hf_tokenizer.HF_FORMAT:
        return hf_tokenizer.hf_tokenizer_from_saved(spec, source)
    model_type = spec["model"].get("type") if isinstance(spec.get("model"), dict) else None
    if model_type == "BPE":
        return BPETokenizer.from_spec(spec, text, source)
    if model_type == "WordLevel":  # our character-level tokenizer, as exported for Hugging Face
        return tokenizer_export.char_from_wordlevel(spec, source)
    raise TokenizerError(f"{source}: not a Fragment_LLM tokenizer (neither byte-level BPE nor character-level)")


def token_byte_lengths(tokenizer_json: str) -> np.ndarray:
    """(vocab,) UTF-8 bytes each token stands for; 0 for special tokens such as <|endoftext|>.

    Bits per byte = total loss in bits / total bytes, counting only tokens that are text, so
    models with different vocabularies (or character- vs BPE-level) compare on the same scale.
    """
    data = json.loads(tokenizer_json)
    if "chars" in data:  # character-level: one token per character, then <|endoftext|>
        return np.array([len(c.encode("utf-8")) for c in data["chars"]] + [0], dtype=np.int64)
    if data.get("format") == "fragment_llm.hf/1":  # a pretrained model's tokenizer (data/hf_tokenizer.py)
        data = data["tokenizer"]
    # Byte-level BPE: every character of a vocabulary entry stands for exactly one byte. SentencePiece-style
    # (byte fallback): "\u2581" is a space, <0xNN> one byte, other characters their UTF-8 bytes.
    sentencepiece = bool(data["model"].get("byte_fallback"))
    vocab: dict[str, int] = data["model"]["vocab"]
    special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    lengths = np.zeros(max([*vocab.values(), *special]) + 1, dtype=np.int64)
    for token, i in vocab.items():
        if i not in special:
            lengths[i] = _sentencepiece_bytes(token) if sentencepiece else len(token)
    return lengths


def _sentencepiece_bytes(token: str) -> int:
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return 1
    return len(token.replace("\u2581", " ").encode("utf-8"))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer in a tokenizer.json, or in a Hugging Face model directory (see hf_tokenizer.py)."""
    from fragment_llm.data import hf_tokenizer

    path = Path(path)
    model_dir = hf_tokenizer.hf_model_dir(path)
    if model_dir is not None:
        return hf_tokenizer.load_hf_tokenizer(model_dir)
    if path.is_dir():  # a run directory
        path = path / "tokenizer.json"
    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise TokenizerError(f"{path}: {path.stat().st_size:,} bytes is too large for a tokenizer file; refused")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from None
    return tokenizer_from_json(text, source=str(path))


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
