"""Tokenizers: round trips, tiktoken == tokenizers == Hugging Face's own loader, special tokens, hostile files."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragment_llm.data import fast_bpe, tokenizer_file
from fragment_llm.data.tokenizer import (
    EOT_TOKEN,
    BPETokenizer,
    CharTokenizer,
    load_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
)
from fragment_llm.errors import TokenizerError
from tests.conftest import corpus_text, cut_at_safe_points

SAMPLES = [
    "",
    "hello world",
    "  leading and trailing  \n\n\t tabs\t",
    "déjà vu — naïve café, 東京, Ελληνικά, emoji 🎉👩‍👩‍👧 end",
    "def f(x):\n    return x ** 2  # comment\r\n",
    f"two docs{EOT_TOKEN}joined",
    "\x00\x01 raw control \ufffd bytes",
]
# Pieces that stress the split pattern: whitespace of every kind, digits, contractions, scripts, emoji.
PIECES = st.sampled_from(
    [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\r", "\u00a0", "\u3000", "\u2028", "\x0b", "\x85", "'s", "'LL", "'ſ",
     "123", "4567", "٣", "Ⅻ", "the", "King", "é", "e\u0301", "東京", "🎉", "👩‍👩‍👧", "!?", "...", "<|", "|>",
     EOT_TOKEN, "<|pad|>", "\ufffd", "\x00"]
)  # fmt: skip
TEXTS = st.one_of(st.text(max_size=200), st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=40).map("".join))


@pytest.fixture(scope="module")
def bpe():
    """Trained on prose, numbers, code and several scripts, so that merges cross every kind of boundary
    the split pattern draws (a pattern the two regex engines read differently shows up as different ids)."""
    numbers = " ".join(f"{n * 7919 % 100_003}.{n % 97} x{n}" for n in range(3000))
    code = "def f(x):\n    return {'a': [1, 2]}  # it's\n\n\t\tif x != y:\r\n" * 200
    world = " 東京の天気 🎉🎉 Ελληνικά — naïve café ١٢٣٤ I'LL WE'VE " * 100
    texts = [corpus_text(100_000), numbers, code, world, "\n".join(SAMPLES) * 20]
    return train_tokenizer("bpe", texts, vocab_size=1000, special_tokens=[EOT_TOKEN, "<|pad|>"])


@pytest.fixture(scope="module")
def hf_from_file(bpe, tmp_path_factory):
    from tokenizers import Tokenizer as HFTokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    bpe.save(path)
    return HFTokenizer.from_file(str(path))


def test_bpe_has_the_requested_vocab_reserved_special_ids_and_the_fast_path(bpe):
    assert bpe.vocab_size == 1000 and bpe.fast
    assert bpe.special_tokens == {EOT_TOKEN: 0, "<|pad|>": 1} and bpe.eot_id == 0
    assert bpe.decode([bpe.eot_id]) == EOT_TOKEN
    assert len(bpe.encode("the king")) < len("the king")  # merges were learned
    spec = json.loads(bpe.to_json())
    assert spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == fast_bpe.SPLIT_PATTERN


@pytest.mark.parametrize("text", SAMPLES)
def test_bpe_round_trips_samples(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_round_trip_and_tiktoken_equals_tokenizers_equals_hf_from_file(bpe, hf_from_file, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    assert ids == bpe._tok.encode(text, add_special_tokens=False).ids  # tiktoken == tokenizers
    assert bpe.encode_array(text).tolist() == ids
    if EOT_TOKEN not in text and "<|pad|>" not in text:  # HF's own loader matches special text (see below)
        assert hf_from_file.encode(text, add_special_tokens=False).ids == ids
    assert not set(ids) & {0, 1}  # user text never yields a special token


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, data=st.data())
def test_encoding_pieces_cut_at_safe_points_equals_encoding_the_whole(bpe, text, data):
    pieces = [p.decode() for p in cut_at_safe_points(text.encode(), lambda: data.draw(st.booleans()))]
    assert sum((bpe.encode(p) for p in pieces), []) == bpe.encode(text)


def test_special_tokens_only_when_explicitly_allowed(bpe, hf_from_file):
    text = f"a{EOT_TOKEN}b<|pad|>c"
    assert bpe.eot_id not in bpe.encode(text) and bpe.decode(bpe.encode(text)) == text
    allowed = bpe.encode(text, allowed_special={EOT_TOKEN})
    assert allowed.count(bpe.eot_id) == 1 and 1 not in allowed
    assert bpe.encode(text, allowed_special="all").count(1) == 1
    with pytest.raises(TokenizerError, match="not special tokens"):
        bpe.encode(text, allowed_special={"<|nope|>"})
    hf_from_file.encode_special_tokens = True  # how a Hugging Face user gets our treatment of special text
    assert hf_from_file.encode(text, add_special_tokens=False).ids == bpe.encode(text)


def test_bpe_saves_and_loads(bpe, tmp_path):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    loaded = load_tokenizer(path)
    assert loaded.fast and loaded.special_tokens == bpe.special_tokens and loaded.sha256 == bpe.sha256
    assert loaded.encode(SAMPLES[3]) == bpe.encode(SAMPLES[3])
    assert bpe.encode_batch([SAMPLES[3], "x"]) == [bpe.encode(SAMPLES[3]), bpe.encode("x")]


def test_a_tokenizer_tiktoken_cannot_mirror_still_encodes_through_tokenizers(tmp_path):
    """A model directory's tokenizer whose pre-tokenizer tiktoken has no pattern for (digits split one by one
    first) stays loadable, on the slow path. (Our own tokenizer files accept only the steps we write.)"""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOT_TOKEN], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([corpus_text(20_000)], trainer=trainer)
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": EOT_TOKEN}))
    old = load_tokenizer(tmp_path)
    assert old.kind == "hf" and not old.fast and old.decode(old.encode(SAMPLES[3])) == SAMPLES[3]


def test_disagreement_sends_encoding_back_to_tokenizers(bpe, monkeypatch, caplog):
    again = tokenizer_from_json(bpe.to_json())
    monkeypatch.setattr(fast_bpe, "agrees", lambda enc, hf, texts: texts[0])
    assert again.verify_fast_path(["some text"]) is False and not again.fast
    assert "disagree" in caplog.text
    assert again.encode("the king") == bpe.encode("the king")


def test_char_tokenizer_round_trips_its_alphabet(tmp_path):
    text = corpus_text(50_000)
    tok = train_tokenizer("char", [text], vocab_size=0)
    assert tok.vocab_size == len(set(text)) + 1 and tok.eot_id == tok.vocab_size - 1
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_array(text[:1000]).tolist() == [tok.chars.index(c) for c in text[:1000]]
    tok.save(tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert isinstance(again, CharTokenizer) and again.encode(text[:500]) == tok.encode(text[:500])


def test_char_tokenizer_refuses_unknown_characters_by_name():
    tok = train_tokenizer("char", ["abc"], vocab_size=0)
    with pytest.raises(TokenizerError, match="'é'"):
        tok.encode("abé")


def _tampered(bpe, change) -> str:
    spec = json.loads(bpe.to_json())
    change(spec)
    return json.dumps(spec)


def _set_vocab(spec, token, value):
    spec["model"]["vocab"][token] = value


HOSTILE = {
    "bad json": lambda bpe: "{not json",
    "not an object": lambda bpe: "[1, 2]",
    "deep nesting": lambda bpe: "[" * 100_000 + "]" * 100_000,
    "unknown model": lambda bpe: json.dumps({"model": {"type": "Unigram"}}),
    "char duplicates": lambda bpe: json.dumps({"format": "fragment_llm.char/1", "chars": "aa"}),
    "char bad eot": lambda bpe: json.dumps({"format": "fragment_llm.char/1", "chars": "ab", "special_tokens": {}}),
    "id out of range": lambda bpe: _tampered(bpe, lambda s: _set_vocab(s, "the", 10**9)),
    "negative id": lambda bpe: _tampered(bpe, lambda s: _set_vocab(s, "the", -1)),
    "string id": lambda bpe: _tampered(bpe, lambda s: _set_vocab(s, "the", "7")),
    "shared id": lambda bpe: _tampered(bpe, lambda s: _set_vocab(s, "the", s["model"]["vocab"]["a"])),
    "dangling merge": lambda bpe: _tampered(bpe, lambda s: s["model"]["merges"].append(["zzz", "qqq"])),
    "no eot": lambda bpe: _tampered(bpe, lambda s: s["added_tokens"].pop(0)),
    "added id conflict": lambda bpe: _tampered(bpe, lambda s: s["added_tokens"][0].update(id=5)),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_corrupt_or_hostile_tokenizer_files_are_refused_by_name(bpe, tmp_path, case):
    path = tmp_path / "tokenizer.json"
    path.write_text(HOSTILE[case](bpe))
    with pytest.raises(TokenizerError, match=str(path)):
        load_tokenizer(path)


def test_huge_vocabularies_and_files_are_refused(bpe, tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.json"
    bpe.save(path)
    monkeypatch.setattr(tokenizer_file, "MAX_VOCAB_SIZE", 999)
    with pytest.raises(TokenizerError, match="exceeds the limit"):
        load_tokenizer(path)
    monkeypatch.setattr(tokenizer_file, "MAX_TOKENIZER_BYTES", 1000)
    with pytest.raises(TokenizerError, match="too large"):
        tokenizer_from_json(bpe.to_json())


def test_bpe_tokenizer_class_is_what_loading_returns(bpe):
    assert isinstance(tokenizer_from_json(bpe.to_json()), BPETokenizer)
