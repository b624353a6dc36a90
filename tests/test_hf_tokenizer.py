"""Pretrained tokenizers from Hugging Face model directories: same ids as `tokenizers`, in the data pipeline
too (uint32 shards past 65,536 tokens), and hostile directories refused."""

import json
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as RustTokenizer

from fragment_llm.data import hf_tokenizer, readers, tokenizer_file
from fragment_llm.data.hf_tokenizer import HFTokenizer, load_hf_tokenizer
from fragment_llm.data.pipeline import prepare_token_cache
from fragment_llm.data.tokenizer import load_tokenizer, tokenizer_from_json, train_tokenizer
from fragment_llm.errors import TokenizerError
from fragment_llm.training.run import train
from tests.conftest import compose_train, corpus_text, cut_at_safe_points
from tests.hf_tokenizer_helpers import FAMILIES, family_dir, llama2_dir, llama3_dir

SPECIAL_TEXT = "<|endoftext|> <s>a</s> <|begin_of_text|>x<|end_of_text|> <|im_end|><think>hm</think><unk>"
SAMPLES = [
    "",
    "hello world",
    "  leading and trailing  \n\n\t tabs\t  ",
    "I'm you'LL they'RE 'ſ 'K don't",
    "déjà vu — naïve café, 東京, Ελληνικά, emoji 🎉👩‍👩‍👧 end",
    "def f(x):\n    return x ** 2  # comment\r\n",
    "1234567 3.14159 1e-10 ١٢٣ ⅷ",
    "e\u0301 A\u030a \u212b \u1100\u1161 composed or not",
    "a\n\n\nb  \n  c\t\n\td      \n",
    SPECIAL_TEXT,
    corpus_text(3000),
]
PIECES = st.sampled_from(
    [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "\u3000", "'s", "'LL", "123", "4567", "٣", "the", "King", "é",
     "e\u0301", "東京", "🎉", "!?", "<s>", "</s>", "<think>", "<|endoftext|>", "\ufffd", "▁", "A", "\nA", "x\n"]
)  # fmt: skip
TEXTS = st.one_of(st.text(max_size=100), st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=30).map("".join))
EXPECTED = {  # family: (fast path, roles, tokens put before a document)
    "gpt2": (True, {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": None, "unk": None}, []),
    "llama3": (True, {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": None, "unk": None},
               ["<|begin_of_text|>"]),
    "qwen3": (True, {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": None}, []),
    "llama2": (False, {"bos": "<s>", "eos": "</s>", "pad": None, "unk": "<unk>"}, ["<s>"]),
    "llama2_metaspace": (False, {"bos": "<s>", "eos": "</s>", "pad": None, "unk": "<unk>"}, ["<s>"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {family: family_dir(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    return {family: load_hf_tokenizer(d) for family, d in family_dirs.items()}


def _reference(directory, special_text_is_text: bool) -> RustTokenizer:
    ref = RustTokenizer.from_file(str(directory / "tokenizer.json"))
    ref.encode_special_tokens = special_text_is_text
    return ref


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_encodes_as_tokenizers_does(family, family_dirs, loaded):
    tok, directory = loaded[family], family_dirs[family]
    fast, roles, prefix = EXPECTED[family]
    assert isinstance(tok, HFTokenizer) and tok.kind == "hf" and tok.fast is fast
    assert tok.roles == roles and tok.eot_id == tok._tok.token_to_id(roles["eos"])
    assert list(tok.doc_prefix_ids) == [tok._tok.token_to_id(t) for t in prefix]
    as_text, as_special = _reference(directory, True), _reference(directory, False)
    for text in SAMPLES:
        ids = tok.encode(text)
        assert ids == as_text.encode(text, add_special_tokens=False).ids, text
        assert tok.encode_array(text).tolist() == ids
        assert tok.encode(text, allowed_special="all") == as_special.encode(text, add_special_tokens=False).ids, text
        if family != "qwen3" and not text.startswith(" "):  # Qwen normalizes to NFC; Metaspace eats one space
            assert tok.decode(ids) == text
    assert tok.encode_batch(SAMPLES) == [tok.encode(t) for t in SAMPLES]


@pytest.mark.parametrize("family", ["llama3", "qwen3"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_tiktoken_equals_tokenizers_on_any_text(family, family_dirs, loaded, text):
    reference = _reference(family_dirs[family], True)
    assert loaded[family].encode(text) == reference.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("family", ["llama2", "llama2_metaspace"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS, data=st.data())
def test_sentencepiece_pieces_cut_at_safe_points_encode_as_the_whole(family, loaded, text, data):
    """A piece that continues a document gets no "▁" of its own, so a long file read in pieces has the ids
    of the file encoded whole."""
    tok = loaded[family]
    pieces = [p.decode() for p in cut_at_safe_points(text.encode(), lambda: data.draw(st.booleans()))]
    ids = [tok.encode_piece(p, doc_start=i == 0).tolist() for i, p in enumerate(pieces)]
    assert sum(ids, []) == tok.encode(text)


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_and_loaded_back_unchanged(family, family_dirs, loaded, tmp_path):
    tok = loaded[family]
    tok.save(tmp_path / "tokenizer.json")  # as the token cache and the run directory keep it
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again.sha256 == tok.sha256 and again.roles == tok.roles and again.doc_prefix_ids == tok.doc_prefix_ids
    assert again.fast == tok.fast and again.encode(SAMPLES[4]) == tok.encode(SAMPLES[4])
    by_file = load_tokenizer(family_dirs[family] / "tokenizer.json")  # beside its tokenizer_config.json
    assert by_file.sha256 == tok.sha256


def test_non_special_added_tokens_are_matched_in_text_on_the_fast_path(loaded):
    qwen = loaded["qwen3"]
    ids = qwen.encode("a<think>b")
    assert qwen.fast and qwen._tok.token_to_id("<think>") in ids
    assert qwen._tok.token_to_id("<|im_end|>") not in qwen.encode("<|im_end|>")  # special: text unless allowed


def test_a_corpus_encoded_with_a_vocabulary_over_65536_tokens_trains_from_uint32_shards(tmp_path):
    model_dir = llama3_dir(tmp_path / "big", filler=65_000)
    corpus = tmp_path / "corpus" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(corpus_text(20_000), encoding="utf-8")
    overrides = ["data=text", "model=tiny", f"data.path={corpus}", f"tokenizer.path={model_dir}", "data.batch_size=4",
                 "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
                 "trainer.enable_model_summary=false", "callbacks.samples.prompts=[]"]  # fmt: skip
    result = train(compose_train(tmp_path, overrides))
    assert result["global_step"] == 2 and np.isfinite(result["val_loss"])
    cfg = compose_train(tmp_path, overrides)
    cache = prepare_token_cache(cfg.data, cfg.tokenizer)  # the cache the run used, found again
    tok = load_tokenizer(cache.tokenizer_path)
    assert cache.meta["dtype"] == "uint32" and cache.meta["vocab_size"] == tok.vocab_size > 65_536
    train_ids = np.asarray(cache.tokens("train"))
    bos, eos = tok.role_ids["bos"], tok.role_ids["eos"]
    assert train_ids[0] == bos > 65_535 and train_ids[-1] == eos > 65_535 and train_ids.dtype == np.uint32
    assert train_ids[1:-1].tolist() == tok.encode(tok.decode(train_ids[1:-1]))


def test_a_sentencepiece_corpus_read_in_pieces_has_the_ids_of_whole_documents(family_dirs, tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PIECE_BYTES", 2000)  # the file streams in many pieces
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(30_000), encoding="utf-8")
    data = {"path": str(corpus), "cache_dir": str(tmp_path / "cache")}
    cache = prepare_token_cache(data, {"path": str(family_dirs["llama2"])})
    tok = load_tokenizer(cache.tokenizer_path)
    texts = []
    for split in ("train", "val"):
        ids = np.asarray(cache.tokens(split)).tolist()
        assert ids[0] == 1 and ids[-1] == 2 and 1 not in ids[1:] and 2 not in ids[:-1]  # <s> document </s>
        texts.append(tok.decode(ids[1:-1]))
        assert ids[1:-1] == tok.encode(texts[-1])
    assert "".join(texts) == corpus.read_text()


def test_the_cache_follows_the_model_directory_files(family_dirs, tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(5000), encoding="utf-8")
    model_dir = family_dirs["qwen3"]
    data = {"path": str(corpus), "cache_dir": str(tmp_path / "cache")}
    first = prepare_token_cache(data, {"path": str(model_dir)})
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    (model_dir / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "<|endoftext|>"}))
    try:
        second = prepare_token_cache(data, {"path": str(model_dir)})
    finally:
        (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    assert first.directory != second.directory and first.meta["eot_id"] != second.meta["eot_id"]


# --- hostile directories -----------------------------------------------------------------------------


def _tamper(directory, change, name="tokenizer.json"):
    spec = json.loads((directory / name).read_text())
    change(spec)
    (directory / name).write_text(json.dumps(spec))


def _split_pattern(pattern):
    return lambda s: s["pre_tokenizer"]["pretokenizers"][0].update(pattern={"Regex": pattern})


HOSTILE = {
    "id out of range": lambda s: s["model"]["vocab"].update({"the": 10**9}),
    "added id out of range": lambda s: s["added_tokens"][-1].update(id=10**6),
    "unknown model": lambda s: s["model"].update(type="Unigram"),
    "catastrophic regex": _split_pattern("(a+)+$"),
    "unknown component": lambda s: s.update(normalizer={"type": "Precompiled", "precompiled_charsmap": "AAAA"}),
    "huge replacement": lambda s: s.update(
        normalizer={"type": "Replace", "pattern": {"String": " "}, "content": "x" * 99}
    ),
    "post-processor id out of range": lambda s: s["post_processor"]["processors"][1]["special_tokens"][
        "<|begin_of_text|>"
    ].update(ids=[10**6]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tokenizer_files_are_refused_by_file_and_field(case, tmp_path):
    directory = llama3_dir(tmp_path / "m")
    _tamper(directory, HOSTILE[case])
    with pytest.raises(TokenizerError, match="tokenizer.json"):
        load_tokenizer(directory)


CONFIGS = {
    "eos not in the vocabulary": ({"eos_token": "<nope>"}, "tokenizer_config.json: eos_token .* not a token"),
    "eos not a string": ({"eos_token": 7}, "eos_token"),
    "no eos anywhere": ({"bos_token": "<|begin_of_text|>"}, "no end-of-sequence token"),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_bad_special_tokens_are_refused(case, tmp_path):
    directory = llama3_dir(tmp_path / "m")
    config, message = CONFIGS[case]
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "config.json").unlink()
    with pytest.raises(TokenizerError, match=message):
        load_tokenizer(directory)


def test_absurd_sizes_are_refused(tmp_path, monkeypatch):
    directory = llama3_dir(tmp_path / "m")
    monkeypatch.setattr(tokenizer_file, "MAX_VOCAB_SIZE", 500)
    with pytest.raises(TokenizerError, match="exceeds the limit"):
        load_tokenizer(directory)
    monkeypatch.setattr(hf_tokenizer, "MAX_TOKENIZER_BYTES", 1000)
    with pytest.raises(TokenizerError, match="too large"):
        load_tokenizer(directory)
    monkeypatch.setattr(hf_tokenizer, "MAX_CONFIG_BYTES", 10)
    with pytest.raises(TokenizerError, match="tokenizer_config.json.*too large"):
        hf_tokenizer.read_roles(directory, json.loads((directory / "tokenizer.json").read_text()))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling would create the marker file
        return (open, (str(self.marker), "w"))


def test_a_directory_of_pickles_is_refused_and_nothing_is_unpickled(tmp_path):
    directory, marker = tmp_path / "m", tmp_path / "unpickled"
    directory.mkdir()
    for name in ("pytorch_model.bin", "tokenizer.pkl", "tokenizer.model"):
        (directory / name).write_bytes(pickle.dumps(_Payload(marker)))
    (directory / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(TokenizerError, match="no tokenizer.json.*never pickles"):
        load_tokenizer(directory)
    corpus = tmp_path / "input.txt"
    corpus.write_text(corpus_text(2000), encoding="utf-8")
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        prepare_token_cache({"path": str(corpus), "cache_dir": str(tmp_path / "cache")}, {"path": str(directory)})
    assert not marker.exists()


SAVED = {
    "eos not special": lambda s: s["roles"].update(eos="<0x41>"),
    "unknown role": lambda s: s["roles"].update(cls="<s>"),
    "no tokenizer": lambda s: s.pop("tokenizer"),
    "tampered vocabulary": lambda s: s["tokenizer"]["model"]["vocab"].update({"the": -1}),
}


@pytest.mark.parametrize("case", sorted(SAVED))
def test_a_tampered_saved_tokenizer_is_refused(case, loaded):
    saved = json.loads(loaded["llama2"].to_json())
    SAVED[case](saved)
    with pytest.raises(TokenizerError, match="checkpoint"):
        tokenizer_from_json(json.dumps(saved), source="checkpoint")


def test_a_directory_without_model_files_is_read_as_ours(family_dirs, tmp_path):
    lone = tmp_path / "tokenizer.json"  # a Llama 2 tokenizer.json with nothing to name its special tokens
    lone.write_text((family_dirs["llama2"] / "tokenizer.json").read_text())
    for path in (lone, tmp_path):
        with pytest.raises(TokenizerError, match="no <\\|endoftext\\|> special token.*give its directory"):
            load_tokenizer(path)
    llama2_dir(tmp_path / "with_config")  # the same file beside its tokenizer_config.json loads
    assert load_tokenizer(tmp_path / "with_config" / "tokenizer.json").eot_id == 2
    run_dir = tmp_path / "run"  # a run directory: our own tokenizer.json, no model files
    run_dir.mkdir()
    train_tokenizer("bpe", [corpus_text(5000)], vocab_size=300).save(run_dir / "tokenizer.json")
    assert load_tokenizer(run_dir).kind == "bpe"
