"""The TensorBoard samples: written by the inference engine, the same text for the same seed."""

from types import SimpleNamespace

import torch

from fragment_llm.inference.api import LoadedModel
from fragment_llm.training.lit_module import LitGPT
from fragment_llm.training.samples import TextSamples
from tests.inference_helpers import MODEL, OPT, char_tokenizer, lively


def test_samples_come_from_the_inference_engine_and_repeat_for_a_seed():
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    lit = LitGPT(model={**MODEL, "vocab_size": tokenizer.vocab_size}, optimizer=OPT, tokenizer_json=tokenizer.to_json())
    lively(lit.model)
    samples = TextSamples(prompts=["abc", None], max_new_tokens=40, temperature=0.9, top_k=8, seed=7)
    samples.on_fit_start(SimpleNamespace(strategy=None), lit)
    lit.train()

    texts = samples.generate(lit)
    assert lit.model.training  # back in training mode afterwards
    assert texts == samples.generate(lit)  # a fixed seed: the same text at every validation
    assert texts[0].startswith("abc") and len(texts[1]) >= 30  # the prompt, then 40 characters (or <|endoftext|>)
    # generate.py's path, same settings and seed: the same text, so TensorBoard shows what sampling will give.
    engine = LoadedModel(lit.model.eval(), tokenizer, None)
    assert texts[0] == engine.generate("abc", max_new_tokens=40, temperature=0.9, top_k=8, seed=7, stop_at_eot=False)
    other_seed = TextSamples(prompts=["abc"], max_new_tokens=40, temperature=0.9, top_k=8, seed=8)
    other_seed.on_fit_start(SimpleNamespace(strategy=None), lit)
    assert other_seed.generate(lit)[0] != texts[0]
