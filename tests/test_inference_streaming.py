"""Streaming text: UTF-8 safe incremental decoding, stop strings, end-of-text, stream == generate."""

import random

import pytest
import torch

from fragment_llm.config import SamplingConfig
from fragment_llm.data.tokenizer import EOT_TOKEN, train_tokenizer
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


def test_stream_equals_generate_and_is_utf8_clean(bpe_model):
    kw = dict(max_new_tokens=60, temperature=1.0, top_k=0, seed=3, stop_at_eot=False)
    pieces = list(bpe_model.stream("café ", **kw))
    text = bpe_model.generate("café ", **kw)
    assert text == "café " + "".join(pieces) and len(pieces) > 10
    # A random model emits stray byte tokens; a piece may carry U+FFFD only where the full text has it.
    assert "".join(pieces).count("\ufffd") == text.count("\ufffd")


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
