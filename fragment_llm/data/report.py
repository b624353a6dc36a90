"""The prepare report: what went in, what was dropped and why, what came out.

Written as `prepare_report.json` next to the token shards and summarized in the log,
so a user can check a corpus before spending hours training on it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

from fragment_llm.data.cleaning import CleaningCounts

log = logging.getLogger(__name__)

MAX_LISTED = 1000  # skipped files and bad records listed by name; beyond that, only counted


@dataclass
class PrepareReport:
    files_found: int = 0
    files_read: int = 0  # read to the end
    files_skipped: list[dict] = field(default_factory=list)  # {"path", "reason"}, up to MAX_LISTED
    skip_reasons: Counter = field(default_factory=Counter)  # reason -> files
    files_stopped_early: list[dict] = field(default_factory=list)  # read in part: {"path", "reason"}
    documents_read: int = 0
    documents_kept: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    documents_too_short: int = 0
    duplicates_removed: int = 0
    records_skipped: Counter = field(default_factory=Counter)  # malformed JSON, missing field, null, ...
    record_errors: list[str] = field(default_factory=list)  # "file:line: what", up to MAX_LISTED
    bytes_in: int = 0  # input read (decompressed; .jsonl lines whole, .parquet text values), before cleaning
    bytes_out: int = 0  # UTF-8 bytes of the kept, cleaned documents
    cleaning: CleaningCounts = field(default_factory=CleaningCounts)
    tokenizer: dict = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=lambda: {"train": 0, "val": 0})
    encode_workers: int = 1
    seconds: dict[str, float] = field(default_factory=dict)

    def skip(self, path: str, reason: str) -> None:
        self.skip_reasons[_reason_class(reason)] += 1
        if len(self.files_skipped) < MAX_LISTED:
            self.files_skipped.append({"path": path, "reason": reason})

    def record_error(self, path: str, line: int, what: str) -> None:
        if len(self.record_errors) < MAX_LISTED:
            self.record_errors.append(f"{path}:{line}: {what}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["files_skipped_count"] = sum(self.skip_reasons.values())
        out["skip_reasons"] = dict(self.skip_reasons)
        out["records_skipped"] = dict(self.records_skipped)
        return out

    def log_summary(self) -> None:
        secs = self.seconds.get("encode", 0.0)
        n_tokens = sum(self.tokens.values())
        log.info(
            "Prepared: %d files found, %d read, %d skipped; %s documents read, %s kept (train %s / val %s), "
            "%s duplicates and %s too short removed",
            self.files_found,
            self.files_read,
            sum(self.skip_reasons.values()),
            f"{self.documents_read:,}",
            f"{sum(self.documents_kept.values()):,}",
            f"{self.documents_kept['train']:,}",
            f"{self.documents_kept['val']:,}",
            f"{self.duplicates_removed:,}",
            f"{self.documents_too_short:,}",
        )
        log.info(
            "Text: %.1f MB in, %.1f MB out; %s invalid UTF-8 sequences replaced, %s control characters removed",
            self.bytes_in / 1e6,
            self.bytes_out / 1e6,
            f"{self.cleaning.invalid_bytes_replaced:,}",
            f"{self.cleaning.control_chars_removed:,}",
        )
        log.info(
            "Tokens: %s train / %s val, encoded in %.1fs (%.1f MB/s, %s tokens/s)",
            f"{self.tokens['train']:,}",
            f"{self.tokens['val']:,}",
            secs,
            self.bytes_in / 1e6 / max(secs, 1e-9),
            f"{n_tokens / max(secs, 1e-9):,.0f}",
        )
        for reason, n in sorted(self.skip_reasons.items()):
            log.info("  skipped %d file(s): %s", n, reason)
        for entry in self.files_stopped_early[:10]:
            log.warning("  read in part: %s: %s", entry["path"], entry["reason"])
        for reason, n in sorted(self.records_skipped.items()):
            log.warning("  skipped %s record(s): %s (first: %s)", f"{n:,}", reason, self._first_error(reason))

    def _first_error(self, reason: str) -> str:
        return next((e for e in self.record_errors if reason in e), "-")


def _reason_class(reason: str) -> str:
    """A reason without its particulars (sizes, paths), so that counts group alike files."""
    return reason.split(" (")[0].split(";")[0]
