"""Tokenizers exported for `transformers`: AutoTokenizer loads them offline and gives our ids.

`transformers` is a test extra: without it these tests are skipped.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragment_llm.data.tokenizer import EOT_TOKEN, CharTokenizer, load_tokenizer, train_tokenizer
from fragment_llm.data.tokenizer_export import export_tokenizer
from fragment_llm.errors import TokenizerError
from tests.conftest import corpus_text
from tests.hf_tokenizer_helpers import FAMILIES, family_dir

transformers = pytest.importorskip("transformers")

SAMPLES = [
    "hello world",
    "  leading and trailing  \n\n\t tabs\t  ",
    "I'm you'LL they'RE 'ſ don't",
    "déjà vu — naïve café, 東京, Ελληνικά, emoji 🎉👩‍👩‍👧 end",
    "def f(x):\n    return x ** 2  # comment\r\n",
    "1234567 3.14159 1e-10 ١٢٣",
    "a\n\n\nb  \n  c\t\n\td      \n",
    f"two docs{EOT_TOKEN}joined<|pad|> and <s>x</s>",
    corpus_text(2000),
]
TEXTS = st.one_of(
    st.text(max_size=100),
    st.lists(st.sampled_from([" ", "\n", "\t", "  ", "'s", "12345", "é", "東京", "🎉", EOT_TOKEN, "<|pad|>", "the"]),
             max_size=30).map("".join),
)  # fmt: skip


@pytest.fixture(scope="module")
def bpe():
    texts = [corpus_text(50_000), " 東京の天気 🎉 Ελληνικά — naïve café 12345 I'LL " * 50, "\n".join(SAMPLES)]
    return train_tokenizer("bpe", texts, vocab_size=600, special_tokens=[EOT_TOKEN, "<|pad|>"])


@pytest.fixture(scope="module")
def char():
    return train_tokenizer("char", ["".join(SAMPLES) + corpus_text(20_000)], vocab_size=0)


def _export(tokenizer, directory, model_type="gpt2"):
    ids = export_tokenizer(tokenizer, directory, block_size=64)
    # The model export writes config.json too: AutoTokenizer must still take tokenizer_config.json's class.
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    return ids, transformers.AutoTokenizer.from_pretrained(str(directory))


def _assert_same_ids(tok, hf, texts):
    for text in texts:
        ours = tok.encode(text, allowed_special="all")
        assert hf(text, add_special_tokens=False)["input_ids"] == ours, text
        assert hf(text)["input_ids"] == [*tok.doc_prefix_ids, *ours], text  # as pipelines call it
        assert hf.decode(ours) == tok.decode(ours)


def test_bpe_exports_with_its_special_tokens_and_the_same_ids(bpe, tmp_path):
    ids, hf = _export(bpe, tmp_path)
    assert ids == {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1}
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id, hf.model_max_length) == (0, 0, 1, 64)
    assert hf.unk_token is None
    _assert_same_ids(bpe, hf, SAMPLES)
    for text in SAMPLES:
        assert hf.decode(hf(text)["input_ids"]) == text


@pytest.fixture(scope="module")
def bpe_in_transformers(bpe, tmp_path_factory):
    return _export(bpe, tmp_path_factory.mktemp("bpe"))[1]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_exported_bpe_gives_our_ids_on_any_text(bpe, bpe_in_transformers, text):
    assert bpe_in_transformers(text, add_special_tokens=False)["input_ids"] == bpe.encode(text, allowed_special="all")


def test_char_tokenizer_exports_one_token_per_character_and_decodes_without_spaces(char, tmp_path):
    ids, hf = _export(char, tmp_path)
    assert ids == {"bos_token_id": char.eot_id, "eos_token_id": char.eot_id, "pad_token_id": None}
    texts = [t for t in SAMPLES if "<s>" not in t] + ["hello  world\n\n  x", EOT_TOKEN + "a"]
    _assert_same_ids(char, hf, texts)
    for text in texts:
        assert hf.decode(hf(text)["input_ids"]) == text == char.decode(char.encode(text, allowed_special="all"))
    unknown = "\u2603"  # not in the vocabulary: both refuse it, neither invents an id
    assert unknown not in char.chars
    with pytest.raises(TokenizerError, match=unknown):
        char.encode(unknown)
    with pytest.raises(Exception, match="UNK"):
        hf(unknown)


def test_an_exported_char_tokenizer_reads_back_as_itself_and_nothing_else_does(char, tmp_path):
    export_tokenizer(char, tmp_path / "m", block_size=64)
    again = load_tokenizer(tmp_path / "m")
    assert isinstance(again, CharTokenizer) and again.chars == char.chars
    spec = json.loads((tmp_path / "m" / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}  # a WordLevel of another layout
    (tmp_path / "m" / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="WordLevel"):
        load_tokenizer(tmp_path / "m")


@pytest.mark.parametrize("family", FAMILIES)
def test_an_imported_tokenizer_exports_unchanged(family, tmp_path):
    tok = load_tokenizer(family_dir(family, tmp_path / "original"))
    ids, hf = _export(tok, tmp_path / "export", model_type="llama" if family.startswith("llama") else "gpt2")
    roles = tok.role_ids
    assert ids == {"bos_token_id": roles["bos"], "eos_token_id": roles["eos"], "pad_token_id": roles["pad"]}
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (roles["bos"], roles["eos"], roles["pad"])
    _assert_same_ids(tok, hf, SAMPLES)
    assert load_tokenizer(tmp_path / "export").sha256 == tok.sha256  # and imports back unchanged
