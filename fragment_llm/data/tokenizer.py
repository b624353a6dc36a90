"""Tokenizers: byte-level BPE (trained with Hugging Face `tokenizers`) and character-level.

Both are stored as one JSON file, `tokenizer.json` (never a pickle). A BPE file is
Hugging Face's own format, so `tokenizers.Tokenizer.from_file` reads it as well.
Documents are separated by the special token `<|endoftext|>`.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

from fragment_llm.errors import TokenizerError

EOT_TOKEN = "<|endoftext|>"
CHAR_FORMAT = "fragment_llm.char/1"


class Tokenizer(ABC):
    vocab_size: int
    eot_id: int
    kind: str

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def to_json(self) -> str: ...

    def save(self, path: str | os.PathLike) -> None:
        _atomic_write_text(Path(path), self.to_json())


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, hf_tokenizer) -> None:
        self._tok = hf_tokenizer
        self.vocab_size = hf_tokenizer.get_vocab_size(with_added_tokens=True)
        eot = hf_tokenizer.token_to_id(EOT_TOKEN)
        if eot is None:
            raise TokenizerError(f"BPE tokenizer has no {EOT_TOKEN} token")
        self.eot_id = eot

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[EOT_TOKEN],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text is encodable
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return cls(HFTokenizer.from_str(text))
        except Exception as e:  # the Rust side raises plain Exception on malformed files
            raise TokenizerError(f"not a valid BPE tokenizer file: {e}") from None

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def to_json(self) -> str:
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

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        alphabet: set[str] = set()
        for t in texts:
            alphabet.update(t)
        return cls("".join(sorted(alphabet)))

    @classmethod
    def from_json(cls, text: str) -> CharTokenizer:
        data = json.loads(text)
        if not isinstance(data.get("chars"), str):
            raise TokenizerError("character tokenizer file has no 'chars' string")
        return cls(data["chars"])

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError as e:
            raise TokenizerError(
                f"character {e.args[0]!r} is not in this character-level vocabulary "
                f"({len(self.chars)} characters); remove it from the text"
            ) from None

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


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size, min_frequency)
    if kind == "char":
        return CharTokenizer.train(texts)
    raise TokenizerError(f"tokenizer.kind={kind!r} is not known; use 'bpe' or 'char'")


def tokenizer_from_json(text: str, source: str = "tokenizer") -> Tokenizer:
    """Build a tokenizer from its JSON text (plain data; nothing is executed or unpickled)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{source}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{source}: expected a JSON object")
    try:
        if data.get("format") == CHAR_FORMAT:
            return CharTokenizer.from_json(text)
        if isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
            return BPETokenizer.from_json(text)
    except TokenizerError as e:
        raise TokenizerError(f"{source}: {e}") from None
    raise TokenizerError(f"{source}: not a Fragment_LLM tokenizer (neither byte-level BPE nor character-level)")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from None
    return tokenizer_from_json(text, source=str(path))


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
