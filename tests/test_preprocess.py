"""Discovery, path safety, cleaning and the streaming readers (every input is built inside the test)."""

import gzip
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fragment_llm.data import readers
from fragment_llm.data.cleaning import CleaningCounts, CleaningRules, clean_bytes
from fragment_llm.data.readers import check_source, iter_items, safe_cut
from fragment_llm.data.sources import discover_files
from fragment_llm.errors import DataError
from tests.conftest import cut_at_safe_points

RULES = CleaningRules()


def _write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _relpaths(*args, **kwargs):
    files, _ = discover_files(*args, **kwargs)
    return [f.relpath for f in files]


def test_discover_filters_extensions_and_excluded_dirs(tmp_path):
    _write(tmp_path / "a.txt", "a")
    _write(tmp_path / "sub" / "b.md", "b")
    _write(tmp_path / "sub" / "c.bin", "c")
    _write(tmp_path / "sub" / "d.jsonl.gz", gzip.compress(b'{"text": "d"}\n'))
    _write(tmp_path / "skipme" / "e.txt", "e")
    files, refused = discover_files(tmp_path, [".txt", "md", ".jsonl"], exclude_dirs=["skipme"])
    assert [(f.relpath, f.format, f.gzip) for f in files] == [
        ("a.txt", "text", False),
        ("sub/b.md", "text", False),
        ("sub/d.jsonl.gz", "jsonl", True),
    ]
    assert refused == []


def test_discover_accepts_files_directories_and_globs(tmp_path):
    a = _write(tmp_path / "x" / "a.txt", "a")
    b = _write(tmp_path / "y" / "b.txt", "b")
    c = _write(tmp_path / "z" / "deep" / "c.txt", "c")
    files, _ = discover_files([str(a), str(tmp_path / "y"), str(tmp_path / "z" / "**" / "*.txt")], [".txt"])
    assert [f.path for f in files] == [a.resolve(), b.resolve(), c.resolve()]


def test_a_file_named_on_its_own_is_read_whatever_its_ending(tmp_path):
    """`data.path=book.txt` with the default data group (extensions ['.py']): extensions only filter walks and globs."""
    book = _write(tmp_path / "book.txt", "a")
    notes = _write(tmp_path / "notes.jsonl.gz", gzip.compress(b'{"text": "n"}\n'))
    plain = _write(tmp_path / "README", "r")
    files, _ = discover_files([str(book), str(notes), str(plain)], [".py"])
    assert [(f.path.name, f.format, f.gzip) for f in files] == [
        ("README", "text", False),
        ("book.txt", "text", False),
        ("notes.jsonl.gz", "jsonl", True),
    ]
    assert discover_files(str(tmp_path), [".py"])[0] == []  # the same files found by walking: filtered
    assert discover_files(str(tmp_path / "*.txt"), [".py"])[0] == []  # and by a glob


@pytest.mark.parametrize("path", ["nope", "nope/*.txt"])
def test_a_path_that_matches_nothing_is_a_clear_error(tmp_path, path):
    with pytest.raises(DataError, match="data.path"):
        discover_files(str(tmp_path / path), [".txt"])


def test_links_and_dotdot_leading_outside_the_root_are_refused_with_a_reason(tmp_path):
    secret = _write(tmp_path / "outside" / "secret.txt", "do not read")
    root = tmp_path / "corpus"
    _write(root / "ok.txt", "fine")
    _write(root / "sub" / "inner.txt", "fine too")
    os.symlink(secret, root / "link.txt")
    os.symlink(tmp_path / "outside", root / "dirlink")
    os.symlink(root / "sub" / "inner.txt", root / "inside_link.txt")  # stays inside: fine
    files, refused = discover_files(root, [".txt"])
    assert [f.relpath for f in files] == ["ok.txt", "sub/inner.txt"]
    assert sorted(os.path.basename(r.path) for r in refused) == ["dirlink", "link.txt"]
    assert all("outside its source root" in r.reason for r in refused)
    files, refused = discover_files(str(root / "*" / ".." / ".." / "outside" / "*.txt"), [".txt"])
    assert files == [] and "outside its source root" in refused[0].reason


def test_files_over_the_size_limit_are_refused(tmp_path):
    _write(tmp_path / "small.txt", "x" * 10)
    _write(tmp_path / "big.txt", "x" * 2000)
    files, refused = discover_files(tmp_path, [".txt"], max_file_bytes=1000)
    assert [f.relpath for f in files] == ["small.txt"]
    assert "larger than data.max_file_mb" in refused[0].reason


def test_clean_text_normalizes_and_counts():
    counts = CleaningCounts()
    raw = b"\xef\xbb\xbfline1\r\nline2\rline3\x00\x07\tend\xff\xfe ok \x1b[0m cafe\xcc\x81\n"
    text = clean_bytes(raw, RULES, counts)
    assert text == "line1\nline2\nline3\tend\ufffd\ufffd ok [0m caf\u00e9\n"  # BOM gone, NFC composed
    assert counts.invalid_bytes_replaced == 2
    assert counts.control_chars_removed == 3  # \x00, \x07, \x1b


def test_cleaning_steps_can_be_switched_off_and_whitespace_collapsing_is_opt_in():
    raw = "a  b\t\tc   \n\n\n\nd\r\ne\u0301".encode()
    assert clean_bytes(raw, RULES, CleaningCounts()) == "a  b\t\tc   \n\n\n\nd\n\u00e9"
    collapse = CleaningRules(collapse_whitespace=True)
    assert clean_bytes(raw, collapse, CleaningCounts()) == "a b c\n\nd\n\u00e9"
    off = CleaningRules(nfc=False, normalize_newlines=False, remove_control_chars=False)
    assert clean_bytes(raw, off, CleaningCounts()) == raw.decode()


def test_existing_replacement_characters_are_not_counted_as_invalid():
    counts = CleaningCounts()
    assert clean_bytes("ok \ufffd".encode(), RULES, counts) == "ok \ufffd"
    assert counts.invalid_bytes_replaced == 0


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \n\r\t\x00é\u0301東🎉")), max_size=300), st.data())
def test_cleaning_piece_by_piece_equals_cleaning_whole(text, data):
    """Cutting where `safe_cut` allows never changes the cleaned text (so streaming is exact)."""
    raw = text.encode()
    pieces = cut_at_safe_points(raw, lambda: data.draw(st.booleans()))
    whole = clean_bytes(raw, RULES, CleaningCounts())
    assert "".join(clean_bytes(p, RULES, CleaningCounts(), strip_bom=i == 0) for i, p in enumerate(pieces)) == whole


def _items(src_path, fmt_exts, val_from=1.0, text_field="text", max_bytes=float("inf")):
    files, _ = discover_files(src_path, fmt_exts)
    return list(iter_items(files[0], 0, val_from, text_field, max_bytes))


def test_a_big_text_file_streams_in_pieces_and_splits_at_val_from(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_BYTES", 1000)
    text = "".join(f"Line {i} of the file.\n" for i in range(2000))
    path = _write(tmp_path / "big.txt", text)
    items = _items(path, [".txt"], val_from=0.9)
    pieces = [i for i in items if i.kind == "text"]
    assert len(pieces) > 10 and max(len(i.payload) for i in pieces) <= 2000
    assert b"".join(i.payload for i in pieces) == text.encode()  # nothing lost, nothing repeated
    train = b"".join(i.payload for i in pieces if i.split == "train")
    assert abs(len(train) - 0.9 * len(text)) < 50 and train.endswith(b"\n")
    ends = [i for i in pieces if i.doc_end]
    assert len(ends) == 2 and ends[0].split == "train" and ends[1] is pieces[-1]  # train part, then val part
    assert items[-1].kind == "end" and items[-1].payload["stopped"] is None and items[-1].payload["sha256"]
    assert sum(i.disk_bytes for i in items) == len(text.encode())


def test_jsonl_blocks_keep_whole_lines_and_line_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_BYTES", 200)
    lines = [f'{{"text": "document {i}"}}' for i in range(100)]
    path = _write(tmp_path / "d.jsonl.gz", gzip.compress(("\n".join(lines) + "\n").encode()))
    items = [i for i in _items(path, [".jsonl"], val_from=0.8) if i.kind == "jsonl"]
    assert b"".join(i.payload for i in items).decode().splitlines() == lines
    for item in items:
        first = item.payload.split(b"\n")[0].decode()
        assert lines[item.first_line - 1] == first
    assert items[0].split == "train" and items[-1].split == "val"


def test_parquet_is_read_in_record_batches_of_its_text_column(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 16)
    texts = [f"row {i}" for i in range(100)] + [None]
    path = tmp_path / "shard.parquet"
    pq.write_table(pa.table({"id": list(range(101)), "text": texts}), path, row_group_size=40)
    items = [i for i in _items(path, [".parquet"], val_from=0.9) if i.kind == "records"]
    assert max(len(i.payload) for i in items) <= 16
    assert [t for i in items for t in i.payload] == texts
    train = [t for i in items if i.split == "train" for t in i.payload]
    assert train == texts[:91]  # round(0.9 * 101) rows


def test_sources_that_cannot_be_read_get_a_reason(tmp_path):
    cases = {
        "nul.txt": b"text\x00with NUL bytes",
        "latin.txt": bytes(range(128, 256)) * 4,
        "bad.parquet": b"PAR1 this is not parquet",
        "broken.txt.gz": gzip.compress(b"hello")[:-12] + b"garbage!",
    }
    for name, data in cases.items():
        _write(tmp_path / name, data)
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    files, _ = discover_files(tmp_path, [".txt", ".parquet"])
    reasons = {f.relpath: check_source(f, "text") for f in files}
    assert reasons["nul.txt"] == "binary (NUL bytes)"
    assert reasons["latin.txt"] == "binary (mostly invalid UTF-8)"
    assert reasons["bad.parquet"].startswith("not a readable parquet file")
    assert reasons["broken.txt.gz"].startswith("read error")
    assert reasons["nocol.parquet"].startswith("no column 'text' (columns: body)")
    assert reasons["ints.parquet"] == "column 'text' holds int64, not text"


def test_a_gzip_bomb_stops_at_the_size_limit(tmp_path):
    path = _write(tmp_path / "bomb.txt.gz", gzip.compress(b"a" * 3_000_000))
    items = _items(path, [".txt"], max_bytes=1_000_000)
    assert "stopped at data.max_file_mb" in items[-1].payload["stopped"]


def test_an_unreadable_file_is_skipped_not_fatal(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = _write(tmp_path / "locked.txt", "secret")
    path.chmod(0)
    files, _ = discover_files(tmp_path, [".txt"])
    assert check_source(files[0], "text").startswith("unreadable")


def test_split_at_safe_cuts_keeps_every_byte_and_cuts_only_where_allowed():
    data = ("Some words here.\n" * 500 + "x" * 3000 + " tail words").encode()
    parts = list(readers.split_at_safe_cuts(data, 1000))
    assert b"".join(parts) == data and len(parts) > 5
    offsets = [sum(map(len, parts[:i])) for i in range(1, len(parts))]
    assert all(safe_cut(data, o, o + 1, last=False) == o or data[o - 1 : o] == b"\n" for o in offsets)
