"""A pretrained model's tokenizer, read from a Hugging Face model directory (tokenizer kind "hf").

Only JSON is read: `tokenizer.json` (the `tokenizers` library's format: vocabulary, merges
and pipeline), and the names of the special tokens from `tokenizer_config.json`, else
`special_tokens_map.json`, else the ids in `config.json`. Never a pickle, never a
SentencePiece `tokenizer.model`, never custom code (`auto_map` and `tokenizer_class` are
ignored). The file passes the checks of tokenizer_file.py and the allow-list of
hf_tokenizer_check.py before `tokenizers` parses it.

The tokenizer encodes as `tokenizers` does with `add_special_tokens=False` (through tiktoken
where the ids-equal check allows: GPT-2, Llama 3, Qwen), byte-level BPE and SentencePiece-
style BPE (Llama 2, TinyLlama: "▁" for spaces, byte fallback) alike. A document ends with
the model's end-of-sequence token and starts with what its post-processor puts before a
text (Llama's BOS; nothing for GPT-2 or Qwen), as transformers gives it to the model.

Saved (in a token cache, run directory or checkpoint) as one JSON object, HF_FORMAT: the
tokenizer.json as `tokenizers` writes it, and the special tokens by role.
"""

from __future__ import annotations

import json
import logging
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fragment_llm.data.hf_tokenizer_check import check_hf_components
from fragment_llm.data.tokenizer import EOT_TOKEN, BPETokenizer, Tokenizer
from fragment_llm.data.tokenizer_file import MAX_TOKENIZER_BYTES, check_bpe_spec, parse_tokenizer_json
from fragment_llm.errors import TokenizerError
from fragment_llm.small_files import read_inside

log = logging.getLogger(__name__)

HF_FORMAT = "fragment_llm.hf/1"
ROLES = ("bos", "eos", "pad", "unk")
MODEL_DIR_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")
MAX_CONFIG_BYTES = 16 << 20  # tokenizer_config.json, special_tokens_map.json, config.json
_CROSSES_NEWLINE = re.compile(r"[\nĊ][A-Za-z0-9]")  # a token spanning a safe cut (Ċ: "\n" in byte-level BPE)


class HFTokenizer(BPETokenizer):
    """A Hugging Face model's BPE tokenizer, with its special tokens by role (bos, eos, pad, unk)."""

    kind = "hf"

    def __init__(self, hf_tokenizer, spec: dict[str, Any], roles: dict[str, str | None]) -> None:
        super().__init__(hf_tokenizer, spec, eot_token=roles["eos"])
        self._roles = {role: roles.get(role) for role in ROLES}
        self._continuing_spec, self._every_segment = continuation_spec(spec)
        self._continuing = None  # built on first use
        self.doc_prefix_ids = tuple(self._post_processor_prefix())
        if any(_CROSSES_NEWLINE.search(t) for t in spec["model"]["vocab"]):
            log.warning(
                "this tokenizer has tokens that span a newline and a letter or digit: long text files, read in "
                "pieces cut after newlines, may get other ids at those cuts (one per MiB) than encoded whole"
            )

    @property
    def roles(self) -> dict[str, str | None]:
        return dict(self._roles)

    @property
    def role_ids(self) -> dict[str, int | None]:
        return {role: None if name is None else self._tok.token_to_id(name) for role, name in self._roles.items()}

    def encode_piece(self, text: str, doc_start: bool = True) -> np.ndarray:
        if doc_start or self._continuing_spec is None:
            return self.encode_array(text)
        if self._continuing is None:
            from tokenizers import Tokenizer as RustTokenizer

            self._continuing = RustTokenizer.from_str(json.dumps(self._continuing_spec))
            self._continuing.encode_special_tokens = True
        return np.asarray(self._continuing.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def _encode_segment(self, text: str, first: bool) -> list[int]:
        # `tokenizers` prefixes each text between special tokens, or (Metaspace's "first") only the first.
        return self.encode_piece(text, doc_start=first or self._every_segment).tolist() if text else []

    def _post_processor_prefix(self) -> list[int]:
        """The ids the file's post-processor puts before a text (what transformers adds by default)."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        starts = [i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain]
        return full[: starts[0]] if starts else []

    def to_json(self) -> str:
        return self._saved_json

    @cached_property
    def _saved_json(self) -> str:  # a 150k-token vocabulary is megabytes of JSON: written out once
        return f'{{"format": "{HF_FORMAT}", "roles": {json.dumps(self._roles)}, "tokenizer": {self._tok.to_str()}}}'


def continuation_spec(spec: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    """(the spec without what it adds at the start of each text, or None if it adds nothing;
    whether it adds it after every special token too).

    SentencePiece-style files put "▁" before a text (a `Prepend` normalizer, or `Metaspace` with a
    prepend scheme), a few byte-level ones a space (`ByteLevel.add_prefix_space`). A piece that
    continues a document must not get one, or it would read as a new word.
    """
    changed, every_segment = False, False

    def strip(node: Any) -> Any:
        nonlocal changed, every_segment
        if not isinstance(node, dict):
            return node
        kind = node.get("type")
        if kind == "Sequence":
            key = next(k for k in ("normalizers", "pretokenizers") if k in node)
            kept = [strip(child) for child in node[key]]
            return {**node, key: [child for child in kept if child is not None]}
        if kind == "Prepend":
            changed = every_segment = True
            return None
        if kind == "Metaspace":  # older files say add_prefix_space instead of prepend_scheme
            scheme = node.get("prepend_scheme") or ("always" if node.get("add_prefix_space", True) else "never")
            if scheme == "never":
                return node
            changed, every_segment = True, every_segment or scheme == "always"
            return {**{k: v for k, v in node.items() if k != "add_prefix_space"}, "prepend_scheme": "never"}
        if kind == "ByteLevel" and node.get("add_prefix_space"):
            changed = every_segment = True
            return {**node, "add_prefix_space": False}
        return node

    normalizer, pre_tokenizer = strip(spec.get("normalizer")), strip(spec.get("pre_tokenizer"))
    if not changed:
        return None, False
    return {**spec, "normalizer": normalizer, "pre_tokenizer": pre_tokenizer}, every_segment


def hf_tokenizer_from_spec(spec: dict[str, Any], text: str, roles: dict[str, str | None], source: str) -> HFTokenizer:
    """Check a Hugging Face BPE tokenizer.json (parsed, and its text) and its special tokens, then build it."""
    from tokenizers import Tokenizer as RustTokenizer

    model = spec.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else None
        raise TokenizerError(
            f"{source}: model.type {kind!r} is not supported; only BPE tokenizers are imported "
            "(GPT-2, Llama, Qwen, SmolLM, TinyLlama families); refused"
        )
    check_bpe_spec(spec, source, eot_token=None)
    vocab = {**model["vocab"], **{t["content"]: t["id"] for t in spec.get("added_tokens") or []}}
    check_hf_components(spec, source, vocab)
    specials = {t["content"] for t in spec.get("added_tokens") or [] if t.get("special")}
    for role, name in roles.items():
        if role not in ROLES:
            raise TokenizerError(f"{source}: unknown special-token role {str(role)[:40]!r} (known: {ROLES}); refused")
        if not (name is None or (isinstance(name, str) and name in vocab)):
            raise TokenizerError(f"{source}: {role}_token {str(name)[:80]!r} is not a token of the vocabulary; refused")
    if roles.get("eos") not in specials:
        raise TokenizerError(
            f"{source}: the end-of-sequence token {roles.get('eos')!r} is not one of its special added tokens; refused"
        )
    try:
        hf = RustTokenizer.from_str(text)
    except Exception as e:  # the Rust side raises plain Exception on malformed files
        raise TokenizerError(f"{source}: not a valid tokenizer file ({str(e)[:200]})") from None
    return HFTokenizer(hf, spec, roles)


def hf_tokenizer_from_saved(saved: dict[str, Any], source: str) -> HFTokenizer:
    """An HFTokenizer from its own saved JSON (HF_FORMAT), checked as any file from outside."""
    spec, roles = saved.get("tokenizer"), saved.get("roles")
    if not isinstance(spec, dict) or not isinstance(roles, dict):
        raise TokenizerError(f"{source}: a {HF_FORMAT} file needs 'tokenizer' and 'roles' objects; refused")
    return hf_tokenizer_from_spec(spec, json.dumps(spec), roles, source)


# --- model directories ------------------------------------------------------------------------------


def hf_model_dir(path: Path) -> Path | None:
    """The model directory `tokenizer.path` names (the directory, or the one holding this tokenizer.json),
    if it has a tokenizer_config.json, special_tokens_map.json or config.json; else None (a tokenizer
    file of ours, or a run directory holding one)."""
    directory = path if path.is_dir() else path.parent if path.name == "tokenizer.json" else None
    if directory is not None and any((directory / name).is_file() for name in MODEL_DIR_FILES[1:]):
        return directory
    return None


def tokenizer_files(path: Path) -> list[Path]:
    """The files that decide the tokenizer `tokenizer.path` names (for the token cache's fingerprint)."""
    model_dir = hf_model_dir(path)
    if model_dir is None:
        return [path / "tokenizer.json" if path.is_dir() else path]
    return [model_dir / name for name in MODEL_DIR_FILES if (model_dir / name).is_file()]


def load_hf_tokenizer(model_dir: str | Path) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory (one we exported with a character-level
    tokenizer gives back a CharTokenizer)."""
    from fragment_llm.data.tokenizer_export import char_from_wordlevel

    model_dir = Path(model_dir).expanduser()
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        others = sorted(p.name for p in model_dir.iterdir())[:8] if model_dir.is_dir() else []
        raise TokenizerError(
            f"{model_dir}: no tokenizer.json (found: {', '.join(others) or 'nothing'}). Only tokenizer.json is read, "
            "never pickles or a SentencePiece tokenizer.model; on a machine with transformers, "
            "AutoTokenizer.from_pretrained(dir).save_pretrained(dir) writes one"
        )
    text = _read(path, MAX_TOKENIZER_BYTES)
    spec = parse_tokenizer_json(text, str(path))
    if isinstance(spec.get("model"), dict) and spec["model"].get("type") == "WordLevel":
        return char_from_wordlevel(spec, str(path))
    return hf_tokenizer_from_spec(spec, text, read_roles(model_dir, spec), str(path))


def read_roles(model_dir: Path, spec: dict[str, Any]) -> dict[str, str | None]:
    """The bos/eos/pad/unk tokens by name: tokenizer_config.json, else special_tokens_map.json, else the
    ids in config.json; unk also from the BPE model; eos last from <|endoftext|>."""
    files = {name: _json_if_present(model_dir / name) for name in MODEL_DIR_FILES[1:]}
    vocab = spec["model"].get("vocab") if isinstance(spec.get("model"), dict) else None
    by_id = {i: t for t, i in vocab.items()} if isinstance(vocab, dict) else {}
    by_id.update({t.get("id"): t.get("content") for t in spec.get("added_tokens") or [] if isinstance(t, dict)})
    roles: dict[str, str | None] = {}
    tokens = set(vocab or ()) | {t.get("content") for t in spec.get("added_tokens") or [] if isinstance(t, dict)}
    for role in ROLES:
        name = None
        for file in ("tokenizer_config.json", "special_tokens_map.json"):
            value = files[file].get(f"{role}_token")
            if value is not None:
                name = _token_name(value, f"{model_dir / file}: {role}_token")
                if name not in tokens:
                    raise TokenizerError(
                        f"{model_dir / file}: {role}_token {name[:80]!r} is not a token of tokenizer.json; refused"
                    )
                break
        if name is None:
            ids = files["config.json"].get(f"{role}_token_id")
            first = ids[0] if isinstance(ids, list) and ids else ids
            name = by_id.get(first) if type(first) is int else None
        if name is None and role == "unk" and isinstance(spec["model"].get("unk_token"), str):
            name = spec["model"]["unk_token"]
        roles[role] = name
    if roles["eos"] is None and any(t.get("content") == EOT_TOKEN for t in spec.get("added_tokens") or []):
        roles["eos"] = EOT_TOKEN
    if roles["eos"] is None:
        raise TokenizerError(
            f"{model_dir}: no end-of-sequence token (no eos_token in tokenizer_config.json or special_tokens_map.json, "
            'no usable eos_token_id in config.json). Add e.g. "eos_token": "</s>" to tokenizer_config.json'
        )
    return roles


def _token_name(value: Any, where: str) -> str:
    """A token as tokenizer_config.json writes it: a string, or an AddedToken object with its content."""
    name = value.get("content") if isinstance(value, dict) else value
    if not isinstance(name, str) or not 0 < len(name) <= 256:
        raise TokenizerError(f"{where}: expected a token string or an object with 'content'; refused")
    return name


def _json_if_present(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return parse_tokenizer_json(_read(path, MAX_CONFIG_BYTES), str(path))


def _read(path: Path, limit: int) -> str:
    try:
        return read_inside(path, limit).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from None
