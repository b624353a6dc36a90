"""Preparation: source files in, token cache out (tokenizer, shards, manifest, report).

    discover -> check -> sample -> train tokenizer -> read, clean, dedup, encode -> shards

The cache directory is named by a hash of everything that decides its contents (see
fingerprint.py), so an unchanged corpus is reused after a directory walk, and any
change builds a new cache. It is built in a private temporary directory and renamed
into place when complete: a crash never leaves half a cache, concurrent builders (DDP
ranks) cannot corrupt each other, and `setup` on any rank finds it finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from fragment_llm.config import DataConfig, TokenizerConfig
from fragment_llm.data.cleaning import CleaningRules
from fragment_llm.data.dataset import CACHE_VERSION, SPLITS, TokenCache
from fragment_llm.data.dedup import SeenHashes
from fragment_llm.data.encoding import EncodeSettings, ItemResult, default_workers, encode_items
from fragment_llm.data.fingerprint import cache_fingerprint, cache_key
from fragment_llm.data.readers import Item, check_source, iter_items
from fragment_llm.data.report import PrepareReport
from fragment_llm.data.shards import ShardWriter, token_dtype
from fragment_llm.data.sources import SourceFile, discover_files, nothing_to_read
from fragment_llm.data.tokenizer import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer
from fragment_llm.data.tokenizer_sample import VERIFY_CHARS, TokenizerSample
from fragment_llm.errors import DataError

log = logging.getLogger(__name__)

PARALLEL_MIN_BYTES = 16 << 20  # below this, worker processes cost more than they save


def as_configs(data: Mapping, tokenizer: Mapping) -> tuple[DataConfig, TokenizerConfig]:
    """Typed configs from plain dicts (missing keys take their defaults; unknown keys or bad types fail)."""
    d = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), dict(data)))
    t = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TokenizerConfig), dict(tokenizer)))
    return d, t


def prepare_token_cache(data: Mapping, tokenizer: Mapping, build: bool = True) -> TokenCache:
    """The token cache for this data and tokenizer config, built unless a finished one exists.

    With `build=False` (every process but the one that builds, under DDP) wait for the process that
    builds it instead, so the corpus is encoded and the tokenizer trained once.
    """
    d, t = as_configs(data, tokenizer)
    t0 = time.perf_counter()
    files, refused = discover_files(d.path, d.extensions, d.exclude_dirs, d.max_file_mb * 1e6)
    if not files:
        raise nothing_to_read(d.path, d.extensions, d.exclude_dirs, refused)
    if refused and d.strict:
        raise DataError(f"{refused[0].path}: {refused[0].reason}. Or set data.strict=false to skip such files.")
    fingerprint = cache_fingerprint(files, d, t)
    directory = Path(d.cache_dir).expanduser().resolve() / cache_key(fingerprint)
    if (directory / "manifest.json").is_file():
        cache = TokenCache.open(directory)
        log.info(
            "Reusing token cache %s (%s train / %s val tokens; report: prepare_report.json)",
            directory,
            f"{cache.meta['tokens']['train']:,}",
            f"{cache.meta['tokens']['val']:,}",
        )
        return cache
    if not build:
        return TokenCache.wait_for(directory)
    builder = _Builder(d, t, files, directory)
    builder.report.files_found = len(files) + len(refused)
    for r in refused:
        builder.report.skip(r.path, r.reason)
    builder.report.seconds["discover"] = time.perf_counter() - t0
    return builder.build(fingerprint)


def _remove_abandoned_builds(directory: Path) -> None:
    """Delete temporary build directories of this cache left by processes of this host that no longer run."""
    host = socket.gethostname()
    for tmp in directory.parent.glob(f".{directory.name}.{host}.*.tmp"):
        pid = tmp.name.removesuffix(".tmp").rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def val_fractions(sources: list[SourceFile], val_fraction: float) -> list[float]:
    """For sources in split order: the fraction of each where its val part begins (1.0: none; 0.0: all val).

    The last `val_fraction` of the bytes, in a stable pseudo-random order of files, is held out: a corpus of
    many files holds out whole files (one is cut in two), a single file its last tenth, as nanoGPT does.
    """
    total = sum(s.size for s in sources)
    boundary, seen, out = total * (1.0 - val_fraction), 0, []
    for s in sources:
        out.append(1.0 if seen + s.size <= boundary else 0.0 if seen >= boundary else (boundary - seen) / s.size)
        seen += s.size
    return out


@dataclass
class _OpenDoc:
    """A text document being streamed piece by piece: where it began, and what is needed to judge it."""

    split: str
    mark: int  # tokens in its split before it
    hashes: list[int]
    bytes: int = 0
    chars: int = 0
    lead_ws: int = 0  # leading whitespace, through any all-whitespace pieces
    trail_ws: int = 0

    def add(self, r: ItemResult) -> None:
        all_ws = r.lead_ws == r.chars
        if self.lead_ws == self.chars:
            self.lead_ws += r.lead_ws
        self.trail_ws = self.trail_ws + r.chars if all_ws else r.trail_ws
        self.chars += r.chars
        self.bytes += int(r.doc_bytes[0])
        self.hashes.append(int(r.doc_hashes[0]))

    @property
    def stripped_chars(self) -> int:
        return max(0, self.chars - self.lead_ws - self.trail_ws)

    @property
    def hash(self) -> int:
        if len(self.hashes) == 1:  # one piece: the same hash as the same text from a .jsonl or .parquet
            return self.hashes[0]
        blob = np.array(self.hashes, np.uint64).tobytes()
        return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


class _Builder:
    def __init__(self, d: DataConfig, t: TokenizerConfig, files: list[SourceFile], directory: Path) -> None:
        self.d, self.t, self.files, self.directory = d, t, files, directory
        self.rules = CleaningRules.from_config(asdict(d.cleaning))
        self.report = PrepareReport()
        self.seen = SeenHashes() if d.cleaning.dedup else None
        self.hashes: dict[int, str | None] = {}

    def build(self, fingerprint: dict[str, Any]) -> TokenCache:
        t0 = time.perf_counter()
        # Build in a private temporary directory, then rename: see the module docstring. It exists from the
        # first step, so processes waiting for this cache (TokenCache.wait_for) see a build in progress.
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_builds(self.directory)
        tmp = self.directory.with_name(f".{self.directory.name}.{socket.gethostname()}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            sources = self._check_sources()
            tokenizer = self._tokenizer(sources)
            tokenizer.save(tmp / "tokenizer.json")
            shards = self._encode(sources, tokenizer, tmp)
            self.report.seconds["total"] = time.perf_counter() - t0 + self.report.seconds.get("discover", 0.0)
            manifest = self._manifest(sources, tokenizer, shards, fingerprint)
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            (tmp / "prepare_report.json").write_text(json.dumps(self.report.to_dict(), indent=1))
            try:
                os.rename(tmp, self.directory)
            except OSError:
                if not (self.directory / "manifest.json").is_file():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same cache first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.report.log_summary()
        log.info("Token cache written to %s", self.directory)
        return TokenCache.open(self.directory)

    def _check_sources(self) -> list[SourceFile]:
        t0, ok = time.perf_counter(), []
        for src in tqdm(self.files, desc="Checking files", unit="file", disable=None, leave=False):
            reason = check_source(src, self.d.text_field)
            if reason is None:
                ok.append(src)
            elif self.d.strict:
                raise DataError(f"{src.path}: {reason}. Or set data.strict=false to skip such files.")
            else:
                self.report.skip(str(src.path), reason)
        self.report.seconds["check"] = time.perf_counter() - t0
        if not ok:
            first = self.report.files_skipped[0] if self.report.files_skipped else {"path": "-", "reason": "-"}
            raise DataError(
                f"data.path: none of the {len(self.files)} files found can be read as text "
                f"(e.g. {first['path']}: {first['reason']}). Check data.path, data.extensions and data.text_field."
            )
        return ok

    # --- tokenizer ----------------------------------------------------------------------------------

    def _tokenizer(self, sources: list[SourceFile]) -> Tokenizer:
        t, t0 = self.t, time.perf_counter()
        if t.path is not None:
            tokenizer = load_tokenizer(Path(t.path).expanduser())
            info: dict[str, Any] = {"from_file": str(t.path)}
            if isinstance(tokenizer, BPETokenizer) and tokenizer.fast:  # check tiktoken on this corpus too
                sample = TokenizerSample(sources, VERIFY_CHARS, self.rules, self.d.text_field)
                for _ in sample:
                    pass
                sample.close()
                tokenizer.verify_fast_path(sample.kept)
        else:
            budget = None if t.kind == "char" else t.train_chars  # a character vocabulary needs every character
            sample = TokenizerSample(sources, budget, self.rules, self.d.text_field)
            if t.kind == "char":
                tokenizer = CharTokenizer.train(sample)
            else:
                tokenizer = BPETokenizer.train(sample, t.vocab_size, t.min_frequency, list(t.special_tokens))
                tokenizer.verify_fast_path(sample.kept)
            sample.close()
            info = {"trained_on_chars": sample.chars}
        secs = time.perf_counter() - t0
        fast = isinstance(tokenizer, BPETokenizer) and tokenizer.fast
        self.report.tokenizer = {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, **info, "tiktoken": fast}
        self.report.seconds["tokenizer"] = secs
        log.info(
            "Tokenizer: %s, %d tokens, in %.1fs%s; encoding with %s",
            tokenizer.kind,
            tokenizer.vocab_size,
            secs,
            f" from {info['trained_on_chars'] / 1e6:.1f}M sampled characters" if "trained_on_chars" in info else "",
            "tiktoken" if fast else "tokenizers" if isinstance(tokenizer, BPETokenizer) else "a character table",
        )
        return tokenizer

    # --- encoding -----------------------------------------------------------------------------------

    def _encode(self, sources: list[SourceFile], tokenizer: Tokenizer, directory: Path) -> dict[str, list[dict]]:
        d, t0 = self.d, time.perf_counter()
        dtype = token_dtype(tokenizer.vocab_size)
        writers = {s: ShardWriter(directory, s, dtype, d.shard_tokens) for s in SPLITS}
        order = sorted(range(len(sources)), key=lambda i: sources[i].split_order)
        fractions = val_fractions([sources[i] for i in order], d.val_fraction)
        max_bytes = d.max_file_mb * 1e6
        items = chain.from_iterable(
            iter_items(sources[i], i, v, d.text_field, max_bytes) for i, v in zip(order, fractions, strict=True)
        )
        settings = EncodeSettings(
            tokenizer_json=tokenizer.to_json(),
            use_tiktoken=isinstance(tokenizer, BPETokenizer) and tokenizer.fast,
            rules=self.rules,
            min_doc_chars=d.cleaning.min_doc_chars,
            text_field=d.text_field,
            dtype=dtype.name,
        )
        total = sum(s.size for s in sources)
        workers = 1 if total < PARALLEL_MIN_BYTES else d.prepare_workers or default_workers()
        doc: _OpenDoc | None = None
        with tqdm(total=total, desc="Encoding", unit="B", unit_scale=True, disable=None) as bar:
            last_postfix = 0.0
            for item, result in encode_items(items, settings, workers):
                src = sources[item.source]
                self.report.bytes_in += result.bytes_in
                self.report.cleaning.add(result.cleaning)
                if item.kind == "end":
                    self._end(src, item, doc, writers)
                    doc = None
                elif item.kind == "text":
                    doc = self._text_piece(item, result, doc, writers)
                else:
                    self._documents(src, item, result, writers)
                bar.update(item.disk_bytes)
                now = time.perf_counter()
                if now - last_postfix > 0.5:
                    n = sum(w.tokens for w in writers.values())
                    bar.set_postfix_str(f"{n / max(now - t0, 1e-9):,.0f} tokens/s, {n:,} tokens", refresh=False)
                    last_postfix = now
        shards = {s: w.close() for s, w in writers.items()}
        self.report.tokens = {s: w.tokens for s, w in writers.items()}
        self.report.seconds["encode"] = time.perf_counter() - t0
        self.report.encode_workers = workers
        self._check_splits()
        return shards

    def _text_piece(self, item: Item, r: ItemResult, doc: _OpenDoc | None, writers) -> _OpenDoc | None:
        if item.doc_start or doc is None:
            doc = _OpenDoc(item.split, writers[item.split].tokens, [])
        writers[doc.split].write(r.tokens)
        doc.add(r)
        if not item.doc_end:
            return doc
        self._judge(doc, writers[doc.split])
        return None

    def _judge(self, doc: _OpenDoc, writer: ShardWriter) -> None:
        self.report.documents_read += 1
        if doc.stripped_chars < self.d.cleaning.min_doc_chars:
            self.report.documents_too_short += 1
            writer.truncate(doc.mark)
        elif self.seen is not None and not self.seen.add_new(np.array([doc.hash], np.uint64))[0]:
            self.report.duplicates_removed += 1
            writer.truncate(doc.mark)
        else:
            self.report.documents_kept[doc.split] += 1
            self.report.bytes_out += doc.bytes

    def _documents(self, src: SourceFile, item: Item, r: ItemResult, writers) -> None:
        rep = self.report
        for line, what in r.errors:
            if self.d.strict:
                raise DataError(
                    f"{src.path}:{line}: {what}. Fix that record, or set data.strict=false to skip bad records."
                )
            rep.record_error(str(src.path), line, what)
        rep.records_skipped.update(r.records_skipped)
        rep.documents_read += r.doc_tokens.size + r.too_short
        rep.documents_too_short += r.too_short
        keep = self.seen.add_new(r.doc_hashes) if self.seen is not None else np.ones(r.doc_tokens.size, bool)
        rep.duplicates_removed += int(keep.size - keep.sum())
        writers[item.split].write(r.tokens if keep.all() else r.tokens[np.repeat(keep, r.doc_tokens)])
        rep.documents_kept[item.split] += int(keep.sum())
        rep.bytes_out += int(r.doc_bytes[keep].sum())

    def _end(self, src: SourceFile, item: Item, doc: _OpenDoc | None, writers) -> None:
        stopped, self.hashes[item.source] = item.payload["stopped"], item.payload["sha256"]
        if stopped is None:
            self.report.files_read += 1
            return
        if self.d.strict:
            raise DataError(f"{src.path}: {stopped}. Or set data.strict=false to skip what cannot be read.")
        if doc is not None:  # a text document cut short: drop it, as if the file had been skipped
            writers[doc.split].truncate(doc.mark)
            self.report.skip(str(src.path), stopped)
        else:
            self.report.files_stopped_early.append({"path": str(src.path), "reason": stopped})

    def _check_splits(self) -> None:
        tokens, rep = self.report.tokens, self.report
        if not tokens["train"] and not tokens["val"]:
            raise DataError(
                f"data.path: no text left to train on: {rep.documents_read:,} documents read, "
                f"{rep.documents_too_short:,} too short, {rep.duplicates_removed:,} duplicates, "
                f"{sum(rep.records_skipped.values()):,} bad records, {sum(rep.skip_reasons.values())} files skipped."
            )
        for split in SPLITS:
            if not tokens[split]:
                raise DataError(
                    f"data.val_fraction={self.d.val_fraction} leaves the {split} split empty "
                    "(too little text, or nowhere to cut it). Add data or change data.val_fraction."
                )

    def _manifest(self, sources, tokenizer: Tokenizer, shards, fingerprint) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "key": self.directory.name,
            "dtype": token_dtype(tokenizer.vocab_size).name,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "tokenizer_kind": tokenizer.kind,
            "tokenizer_sha256": tokenizer.sha256,
            "tokens": self.report.tokens,
            "documents": self.report.documents_kept,
            "shard_tokens": self.d.shard_tokens,
            "shards": shards,
            "sources": [
                {
                    "path": s.path.as_posix(),
                    "format": s.format + (".gz" if s.gzip else ""),
                    "size": s.size,
                    "mtime_ns": s.mtime_ns,
                    "sha256": self.hashes.get(i),
                }
                for i, s in enumerate(sources)
            ],
            "config": {k: v for k, v in fingerprint.items() if k != "sources"},
        }
