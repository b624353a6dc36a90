"""Streaming text: UTF-8 safe incremental decoding, stop strings, end-of-text, stream == generate."""

import itertools
import json
import random

import pytest
import torch

from fragment_llm.config import SamplingConfig
from fragment_llm.data import fast_bpe
from fragment_llm.data.tokenizer import EOT_TOKEN, train_tokenizer
from fragment_llm.inference import streaming
from fragment_llm.inference.api import LoadedModel, sampling_config
from fragment_llm.inference.streaming import Generation, IncrementalDecoder, StopMatcher
from tests.conftest import synthetic_text
from tests.inference_helpers import tiny_gpt

TEXT = "Ünïcode: naïve café — 日本語 😀 ok"


@pytest.fixture(scope="module")
def ascii_bpe():
    """Trained on ASCII only: every non-ASCII character becomes 2-4 single-byte tokens."""
    return train_tokenizer("bpe", [synthetic_text(20_000)], vocab_size=300)


@pytest.fixture(scope="module")
def bpe_model(ascii_bpe):
    return LoadedModel(tiny_gpt(vocab_size=ascii_bpe.vocab_size), ascii_bpe, checkpoint_path=None)


def test_multibyte_characters_never_print_as_garbage(ascii_bpe):
    ids = ascii_bpe.encode(TEXT)
    assert any("\ufffd" in ascii_bpe.decode([i]) for i in ids)  # the tokenizer really splits characters
    decoder = IncrementalDecoder(ascii_bpe)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == TEXT
    assert not any("\ufffd" in p for p in pieces)
    assert "😀" in pieces  # printed whole, as soon as its fourth byte arrived


def test_streamed_pieces_always_add_up_to_the_full_decode(ascii_bpe):
    """Any id sequence (invalid UTF-8 included): what was printed is exactly what decoding all ids gives."""
    rng = random.Random(0)
    byte_heavy = [i for i in range(ascii_bpe.vocab_size) if "\ufffd" in ascii_bpe.decode([i])]  # non-ASCII bytes
    for _ in range(300):
        ids = [rng.choice(byte_heavy) if rng.random() < 0.6 else rng.randrange(ascii_bpe.vocab_size) for _ in range(30)]
        decoder = IncrementalDecoder(ascii_bpe)
        assert "".join([decoder.push(i) for i in ids] + [decoder.flush()]) == ascii_bpe.decode(ids)


def test_a_genuine_replacement_character_is_printed(ascii_bpe):
    ids = ascii_bpe.encode("a\ufffdb")
    decoder = IncrementalDecoder(ascii_bpe)
    assert "".join(decoder.push(i) for i in ids) == "a\ufffdb"


def test_stop_string_split_across_pieces_is_held_back_and_cut():
    matcher = StopMatcher(["THE END", "\n\n"])
    out = [matcher.push(p) for p in ["Once upon", " a time. TH", "E", " E", "ND and more"]]
    assert out == ["Once upon", " a time. ", "", "", ""] and matcher.stopped
    matcher = StopMatcher(["THE END"])
    assert matcher.push("THE E") == "" and matcher.push("ARTH") == "THE EAR"  # "TH" may still start "THE END"
    assert matcher.flush() == "TH" and not matcher.stopped
    matcher = StopMatcher(["xyz", "b"])
    assert matcher.push("a b xyz") == "a " and matcher.stopped  # the earliest stop wins
    assert StopMatcher([]).push("anything") == "anything"


def _greedy_text(lm, **settings):
    return lm.generate("the ", max_new_tokens=40, temperature=0, stop_at_eot=False, **settings)[len("the ") :]


def test_stop_strings_end_the_sample_before_the_stop(bpe_model):
    full = _greedy_text(bpe_model)
    stop = full[10:13]
    assert len(stop) == 3 and stop in full
    expected = full[: full.index(stop)]
    assert _greedy_text(bpe_model, stop=[stop]) == expected
    pieces = list(bpe_model.stream("the ", max_new_tokens=40, temperature=0, stop_at_eot=False, stop=[stop]))
    assert "".join(pieces) == expected


def _token_bytes(tokenizer, token_id: int) -> bytes:
    """The raw bytes of one byte-level BPE token (special tokens: their text)."""
    spec = json.loads(tokenizer.to_json())
    specials = {t["id"]: t["content"] for t in spec["added_tokens"]}
    if token_id in specials:
        return specials[token_id].encode()
    token = {i: t for t, i in spec["model"]["vocab"].items()}[token_id]
    return bytes(fast_bpe.UNICODE_TO_BYTE[c] for c in token)


def _characters_split_across_tokens(token_bytes: list[bytes]) -> list[str]:
    """The valid multi-byte UTF-8 characters of the byte stream whose bytes came in more than one token."""
    data = b"".join(token_bytes)
    cuts = set(itertools.accumulate(len(b) for b in token_bytes))
    found, i = [], 0
    while i < len(data):
        lead = data[i]
        n = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 1
        try:
            char = data[i : i + n].decode("utf-8")
        except UnicodeDecodeError:
            i += 1
            continue
        if n > 1 and any(i < cut < i + n for cut in cuts):
            found.append(char)
        i += n
    return found


def test_stream_equals_generate_and_is_utf8_clean(bpe_model, ascii_bpe, monkeypatch):
    """The streamed pieces add up to generate()'s text and to the UTF-8 decoding (Python's codec, not the
    tokenizer) of the sampled tokens' bytes, in a sample whose multi-byte characters arrive split over byte
    tokens: each is printed whole, and U+FFFD appears only for bytes that are invalid UTF-8."""
    sampled: list[int] = []
    real = streaming.generate_tokens

    def recording(*args, **kwargs):
        for step in real(*args, **kwargs):
            sampled.append(int(step[0]))
            yield step

    monkeypatch.setattr(streaming, "generate_tokens", recording)
    kw = dict(max_new_tokens=200, temperature=1.0, top_k=0, seed=3, stop_at_eot=False)
    pieces = list(bpe_model.stream("café ", **kw))
    ids = list(sampled)
    text = bpe_model.generate("café ", **kw)
    assert sampled[len(ids) :] == ids  # generate() sampled the same tokens
    assert text == "café " + "".join(pieces) and len(pieces) > 10
    token_bytes = [_token_bytes(ascii_bpe, i) for i in ids]
    assert "".join(pieces) == b"".join(token_bytes).decode("utf-8", errors="replace")
    assert _characters_split_across_tokens(token_bytes)  # the case under test occurs in this sample
    assert any("\ufffd" in ascii_bpe.decode([i]) for i in ids)  # as do stray bytes decoded alone


def test_end_of_text_ends_a_sample(ascii_bpe):
    model = tiny_gpt(vocab_size=ascii_bpe.vocab_size)
    eot = ascii_bpe.eot_id
    with torch.no_grad():  # make <|endoftext|> the most likely next token after anything
        model.transformer.wte.weight[eot] *= 10
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(model.transformer.wte.weight[eot])
    prompt = ascii_bpe.encode("the king")

    def texts(stop_at_eot):
        s = sampling_config(max_new_tokens=3, temperature=0, stop_at_eot=stop_at_eot)
        generation = Generation(model, ascii_bpe, prompt, s, 2, torch.Generator())
        steps = list(generation)
        return generation.texts, len(steps)

    assert texts(True) == (["", ""], 2)  # one step, then the final (empty) flush
    assert texts(False)[0] == [EOT_TOKEN * 3] * 2


def test_generation_counts_tokens_and_time(bpe_model):
    s = SamplingConfig(max_new_tokens=12, temperature=0, stop_at_eot=False)
    generation, _ = bpe_model.prepare("the", s, num_samples=3)
    assert [len(step) for step in generation] == [3] * 13
    assert generation.tokens == 36 and generation.seconds > 0 and generation.tokens_per_second > 0


def test_a_generation_runs_once(bpe_model):
    generation, _ = bpe_model.prepare("the", SamplingConfig(max_new_tokens=2))
    list(generation)
    with pytest.raises(RuntimeError, match="runs once"):
        list(generation)
