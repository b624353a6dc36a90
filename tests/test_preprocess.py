import os

import pytest

from fragment_llm.data.preprocess import (
    PrepareStats,
    clean_text,
    discover_files,
    read_documents,
    split_documents,
)
from fragment_llm.errors import DataError


def _write(path, data: bytes | str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_discover_filters_extensions_and_excluded_dirs(tmp_path):
    _write(tmp_path / "a.txt", "a")
    _write(tmp_path / "sub" / "b.md", "b")
    _write(tmp_path / "sub" / "c.bin", "c")
    _write(tmp_path / "skipme" / "d.txt", "d")
    files = discover_files(tmp_path, [".txt", "md"], exclude_dirs=["skipme"])
    assert [f.relpath for f in files] == ["a.txt", "sub/b.md"]


def test_discover_accepts_a_file_and_a_list(tmp_path):
    a = _write(tmp_path / "x" / "a.txt", "a")
    b = _write(tmp_path / "y" / "b.txt", "b")
    files = discover_files([str(a), str(tmp_path / "y")], [".txt"])
    assert [f.path for f in files] == [a.resolve(), b.resolve()]


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover_files(tmp_path / "nope", [".txt"])


def test_symlink_escaping_its_root_is_refused(tmp_path):
    secret = _write(tmp_path / "outside" / "secret.txt", "do not read")
    root = tmp_path / "corpus"
    _write(root / "ok.txt", "fine")
    os.symlink(secret, root / "link.txt")
    os.symlink(tmp_path / "outside", root / "dirlink")
    assert [f.relpath for f in discover_files(root, [".txt"])] == ["ok.txt"]


def test_clean_text_normalizes_and_counts():
    stats = PrepareStats()
    raw = b"line1\r\nline2\rline3\x00\x07\tend\xff\xfe ok \x1b[0m\n"
    text = clean_text(raw, stats)
    assert text == "line1\nline2\nline3\tend\ufffd\ufffd ok [0m\n"
    assert stats.invalid_bytes_replaced == 2
    assert stats.control_chars_removed == 3  # \x00, \x07, \x1b


def test_existing_replacement_characters_are_not_counted_as_invalid():
    stats = PrepareStats()
    assert clean_text("ok \ufffd".encode(), stats) == "ok \ufffd"
    assert stats.invalid_bytes_replaced == 0


def test_read_documents_skips_empty_files_and_never_writes(tmp_path):
    a = _write(tmp_path / "a.txt", "hello\r\n")
    _write(tmp_path / "empty.txt", "  \n\x00")
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    os.chmod(a, 0o444)
    stats = PrepareStats()
    docs = list(read_documents(discover_files(tmp_path, [".txt"]), stats))
    assert docs == [("a.txt", "hello\n")]
    assert stats.files_found == 2 and stats.files_read == 1
    assert stats.skipped == {"empty after cleaning": 1}
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_single_document_splits_along_its_length_like_nanogpt():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    train, val = split_documents([("input.txt", text)], 0.1)
    assert train == [text[:900]] and val == [text[900:]]


def test_many_documents_hold_out_whole_files_deterministically():
    docs = [(f"f{i}.txt", f"document {i} " * 10) for i in range(50)]
    train, val = split_documents(docs, 0.2)
    assert split_documents(list(reversed(docs)), 0.2) == (train, val)  # order of discovery is irrelevant
    total = sum(len(t) for _, t in docs)
    assert abs(sum(map(len, val)) - 0.2 * total) <= 1
    whole = {t for _, t in docs}
    assert sum(t not in whole for t in train + val) <= 2  # at most one file is cut in two
    assert "".join(sorted(train + val)) != "" and not set(train) & set(val)
