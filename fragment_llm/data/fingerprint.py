"""What decides a token cache's contents, and the directory name derived from it.

The fingerprint holds each source's path, size and modification time, the reading,
cleaning, split and shard settings, and the tokenizer settings (or the tokenizer file's
hash). Its hash names the cache directory: the same inputs find the same cache after a
directory walk, and any change builds a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fragment_llm.config import DataConfig, TokenizerConfig
from fragment_llm.data.dataset import CACHE_VERSION
from fragment_llm.data.hf_tokenizer import tokenizer_files
from fragment_llm.data.sources import SourceFile, normalize_extensions, sources_fingerprint
from fragment_llm.errors import DataError


def cache_fingerprint(files: list[SourceFile], d: DataConfig, t: TokenizerConfig) -> dict[str, Any]:
    if t.path is not None:
        tok: dict[str, Any] = {"file_sha256": _files_sha256(tokenizer_files(Path(t.path).expanduser()))}
    elif t.kind == "char":
        tok = {"kind": "char"}
    else:
        tok = {k: getattr(t, k) for k in ("kind", "vocab_size", "min_frequency", "train_chars", "special_tokens")}
    return {
        "version": CACHE_VERSION,
        "sources": sources_fingerprint(files),
        "reading": {
            "extensions": sorted(normalize_extensions(d.extensions)),
            "exclude_dirs": sorted(d.exclude_dirs),
            "text_field": d.text_field,
            "max_file_mb": d.max_file_mb,
            "strict": d.strict,
        },
        "cleaning": asdict(d.cleaning),
        "split": {"val_fraction": d.val_fraction},
        "shards": {"shard_tokens": d.shard_tokens},
        "tokenizer": tok,
    }


def cache_key(fingerprint: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def _files_sha256(paths: list[Path]) -> str:
    """A tokenizer file's SHA-256; for a model directory's files, the hash of their names and hashes."""
    digests = []
    for path in paths:
        try:
            digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError as e:
            raise DataError(f"tokenizer.path: cannot read {path} ({e.strerror or e})") from None
    if len(paths) == 1:
        return digests[0]
    return hashlib.sha256(json.dumps([[p.name, d] for p, d in zip(paths, digests, strict=True)]).encode()).hexdigest()
