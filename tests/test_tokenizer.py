import json

import pytest

from fragment_llm.data.tokenizer import EOT_TOKEN, CharTokenizer, load_tokenizer, train_tokenizer
from fragment_llm.errors import TokenizerError
from tests.conftest import corpus_text

SAMPLES = [
    "",
    "hello world",
    "  leading and trailing  \n\n\t tabs\t",
    "déjà vu — naïve café, 東京, Ελληνικά, emoji 🎉👩‍👩‍👧 end",
    "def f(x):\n    return x ** 2  # comment\r\n",
    f"two docs{EOT_TOKEN}joined",
    "\x00\x01 raw control \ufffd bytes",
]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", [corpus_text(100_000), "def f(x):\n    return x\n"], vocab_size=400)


def test_bpe_has_the_requested_vocab_and_eot(bpe):
    assert bpe.vocab_size == 400
    assert bpe.decode([bpe.eot_id]) == EOT_TOKEN
    assert len(bpe.encode("the king")) < len("the king")  # merges were learned


@pytest.mark.parametrize("text", SAMPLES)
def test_bpe_round_trips_any_text(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_saves_as_hugging_face_json(bpe, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    loaded = load_tokenizer(path)
    text = SAMPLES[3]
    assert loaded.encode(text) == bpe.encode(text)
    assert HFTokenizer.from_file(str(path)).encode(text, add_special_tokens=False).ids == bpe.encode(text)
    assert bpe.encode_batch([text, "x"]) == [bpe.encode(text), bpe.encode("x")]


def test_char_tokenizer_round_trips_its_alphabet(tmp_path):
    text = corpus_text(50_000)
    tok = train_tokenizer("char", [text], vocab_size=0)
    assert tok.vocab_size == len(set(text)) + 1 and tok.eot_id == tok.vocab_size - 1
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert isinstance(again, CharTokenizer) and again.encode(text[:500]) == tok.encode(text[:500])


def test_char_tokenizer_refuses_unknown_characters_by_name():
    tok = train_tokenizer("char", ["abc"], vocab_size=0)
    with pytest.raises(TokenizerError, match="'é'"):
        tok.encode("abé")


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"model": {"type": "Unigram"}}),
        json.dumps({"format": "fragment_llm.char/1", "chars": "aa"}),
    ],
)
def test_corrupt_tokenizer_files_are_refused(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(TokenizerError, match=str(path)):
        load_tokenizer(path)
