"""Hugging Face models in and out, end to end: import, fine-tune with train.py's job, export, load in transformers.

For each family a tiny random model made with transformers (GPT-2 with tanh GELU; Llama with
GQA and an untied head; Qwen3 with QK-norm, head_dim != width/heads and a padded embedding)
plus a tokenizer of ours: our logits equal theirs, a few fine-tuning steps give an ordinary
checkpoint, its export loads in transformers with our logits, and greedy text from
transformers' pipeline equals generate.py's at temperature 0.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from fragment_llm.data.tokenizer import load_tokenizer, train_tokenizer
from fragment_llm.errors import FragmentLLMError
from fragment_llm.inference import load_model
from fragment_llm.inference.cli import run_generate
from fragment_llm.inference.export import export_model
from fragment_llm.training.init_from import apply_init_from
from fragment_llm.training.run import train
from tests.conftest import REPO_ROOT, compose_config, compose_train, corpus_text, run_python
from tests.hf_helpers import PADDING, half_characters, save_hf_model
from tests.inference_helpers import CHARS, char_tokenizer, save_checkpoint

transformers = pytest.importorskip("transformers")
from fragment_llm.data.tokenizer_export import export_tokenizer  # noqa: E402  (after the skip)

PROMPT = "KING RICHARD: What"
FINETUNE = [
    "experiment=finetune",
    "model.block_size=32",
    "data.batch_size=4",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1.0",  # the whole (small) val split, before training too: like with like
    "trainer.num_sanity_val_steps=-1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "callbacks.samples=null",
    "~logger",
]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", [corpus_text(40_000)], vocab_size=300)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(corpus_text(30_000), encoding="utf-8")
    return path


def hf_dir(family: str, path: Path, tokenizer) -> Path:
    """A transformers model of `family` with our tokenizer's files, stopping at its end-of-text token."""
    ids = export_tokenizer(tokenizer, path, block_size=64)
    vocab_size = tokenizer.vocab_size + PADDING[family]
    model = save_hf_model(family, path, vocab_size, mute=half_characters(tokenizer, vocab_size))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **ids}))
    model.generation_config.update(**ids)
    model.generation_config.save_pretrained(path)
    return path


def transformers_logits(path: Path, ids: list[int]) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def our_logits(ckpt: Path, ids: list[int]) -> torch.Tensor:
    model = load_model(ckpt, device="cpu", precision="float32").model
    with torch.no_grad():
        return model(torch.tensor([ids]), torch.tensor([ids]))[0][0]


def pipeline_text(path: Path, prompt: str, new: int = 12) -> str:
    generate = transformers.pipeline("text-generation", model=str(path), tokenizer=str(path), device="cpu")
    return generate(prompt, max_new_tokens=new, do_sample=False)[0]["generated_text"]


def generate_py_text(ckpt: Path, prompt: str, new: int = 12) -> str:
    """What `python generate.py ckpt=... prompt=... temperature=0` prints."""
    cfg = compose_config("generate", [f"ckpt={ckpt}", f"prompt={json.dumps(prompt)}", "temperature=0",
                                      f"max_new_tokens={new}", "device=cpu"])  # fmt: skip
    out = io.StringIO()
    run_generate(cfg, out=out)
    return out.getvalue().removesuffix("\n")


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen3"])
def test_import_finetune_export_round_trip(tmp_path, bpe, corpus, family):
    model_dir = hf_dir(family, tmp_path / "pretrained", bpe)
    ids = bpe.encode(corpus_text(300))[:40]

    # Imported: generate.py and load_model sample from the directory directly, with transformers' logits.
    torch.testing.assert_close(our_logits(model_dir, ids), transformers_logits(model_dir, ids), atol=1e-4, rtol=1e-4)
    assert generate_py_text(model_dir, PROMPT) == pipeline_text(model_dir, PROMPT)

    # Fine-tuned: an ordinary checkpoint that started from the pretrained weights.
    overrides = [*FINETUNE, f"init_from={model_dir}", f"data.path={corpus}"]
    result = train(compose_train(tmp_path, overrides), overrides)
    assert result["global_step"] == 3 and result["val_loss"] < result["initial_val_loss"]
    ckpt = Path(result["last_ckpt"])
    tuned, before = our_logits(ckpt, ids[:32]), transformers_logits(model_dir, ids[:32])
    assert not torch.equal(tuned, before) and (tuned - before).abs().max() < 0.5
    assert load_tokenizer(Path(result["run_dir"]) / "tokenizer.json").encode(PROMPT) == bpe.encode(PROMPT)
    if family == "llama":  # it resumes like any run (the checkpoint's weights, not the directory's)
        resumed = train(compose_train(tmp_path, [*overrides, f"resume={result['run_dir']}", "trainer.max_steps=4"]))
        assert resumed["resumed_from"] == str(ckpt) and resumed["global_step"] == 4
        ckpt = Path(resumed["last_ckpt"])
        tuned = our_logits(ckpt, ids[:32])

    # Exported: transformers loads it, computes our logits and writes our greedy text.
    out = export_model(ckpt, tmp_path / "export")
    torch.testing.assert_close(transformers_logits(out, ids[:32]), tuned, atol=1e-4, rtol=1e-4)
    assert pipeline_text(out, PROMPT) == generate_py_text(ckpt, PROMPT)
    config = json.loads((out / "config.json").read_text())
    expected = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}[family]
    assert config["architectures"] == [expected] and config["eos_token_id"] == bpe.eot_id
    assert config["vocab_size"] == bpe.vocab_size + PADDING[family]
    card = (out / "README.md").read_text()
    assert f"fine-tuned from `{model_dir}`" in card and str(corpus) in card and "validation loss: " in card
    assert "1 file(s)" in card and "documents after cleaning" in card


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_our_models_export_with_either_tokenizer_kind(tmp_path, bpe, kind):
    tokenizer = bpe if kind == "bpe" else char_tokenizer()
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tokenizer)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["state_dict"]["model.lm_head.weight"][half_characters(tokenizer, tokenizer.vocab_size)] = 0.0
    torch.save(checkpoint, ckpt)
    out = export_model(tmp_path / "run", tmp_path / "export", dtype="float32")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    prompt = "abc gh" if kind == "char" else "the king"
    assert len(tokenizer.encode(prompt)) + 6 <= 16  # within the model's context: transformers cannot slide
    assert hf_tokenizer(prompt)["input_ids"] == tokenizer.encode(prompt)
    ids = tokenizer.encode((CHARS * 2)[:16] if kind == "char" else corpus_text(200))[:16]
    torch.testing.assert_close(transformers_logits(out, ids), our_logits(ckpt, ids), atol=1e-4, rtol=1e-4)
    assert pipeline_text(out, prompt, new=6) == generate_py_text(ckpt, prompt, new=6)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tokenizer.eot_id


def test_bfloat16_export_is_half_the_size_and_close(tmp_path, bpe):
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", bpe, position="rope", norm="rmsnorm",
                    mlp="swiglu", bias=False, tie_embeddings=False)  # fmt: skip
    full = export_model(tmp_path / "run", tmp_path / "fp32")
    half = export_model(tmp_path / "run", tmp_path / "bf16", dtype="bfloat16")
    size = {p.name: (p / "model.safetensors").stat().st_size for p in (full, half)}
    assert size["bf16"] < 0.55 * size["fp32"]
    assert json.loads((half / "config.json").read_text())["torch_dtype"] == "bfloat16"
    ids = bpe.encode(PROMPT)
    a, b = transformers_logits(full, ids), transformers_logits(half, ids)
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_export_refuses_to_overwrite_and_writes_atomically(tmp_path, bpe):
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", bpe)
    out = tmp_path / "export"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FragmentLLMError, match="not empty"):
        export_model(tmp_path / "run", out)
    with pytest.raises(FragmentLLMError, match="not a model directory"):
        export_model(tmp_path / "run", out, overwrite=True)  # nothing of the user's is deleted
    assert (out / "notes.txt").read_text() == "mine"
    with pytest.raises(FragmentLLMError, match="holds the model being exported"):
        export_model(tmp_path / "run", tmp_path, overwrite=True)
    (out / "notes.txt").unlink()
    done = run_python([str(REPO_ROOT / "export.py"), f"ckpt={tmp_path / 'run'}", f"out={out}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert "python export.py ckpt=" in (out / "README.md").read_text()
    first = (out / "model.safetensors").read_bytes()
    export_model(tmp_path / "run", out, overwrite=True)
    assert (out / "model.safetensors").read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no leftovers


def test_export_refuses_a_switch_by_name_before_writing(tmp_path, bpe):
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", bpe, mlp="relu2")
    with pytest.raises(FragmentLLMError, match="mlp=relu2"):
        export_model(tmp_path / "run", tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_model_dir_with_out_of_range_token_ids_is_refused(tmp_path, bpe):
    model_dir = hf_dir("gpt2", tmp_path / "model", bpe)
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    spec["model"]["vocab"]["Ġzz"] = 10**6  # an id far past the embedding
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(FragmentLLMError, match="tokenizer.json"):
        load_model(model_dir, device="cpu")


def test_init_from_refuses_another_tokenizer_and_a_longer_context(tmp_path, bpe, corpus):
    model_dir = hf_dir("llama", tmp_path / "model", bpe)
    base = [*FINETUNE, f"init_from={model_dir}", f"data.path={corpus}"]
    with pytest.raises(FragmentLLMError, match="brings its own tokenizer"):
        train(compose_train(tmp_path, [*base, f"tokenizer.path={tmp_path}"]))
    with pytest.raises(FragmentLLMError, match="max_position_embeddings=64"):
        train(compose_train(tmp_path, [*base, "model.block_size=128"]))


def test_init_from_without_the_finetune_preset_warns_that_muon_is_the_optimizer(tmp_path, bpe, caplog):
    model_dir = hf_dir("llama", tmp_path / "model", bpe)
    for overrides, warned in (([], True), (["experiment=finetune"], False), (["optimizer=adamw"], False)):
        caplog.clear()
        cfg = compose_train(tmp_path, [*overrides, f"init_from={model_dir}", "model.block_size=32"])
        with caplog.at_level("WARNING", logger="fragment_llm.training.init_from"):
            apply_init_from(cfg, [])
        assert ("init_from with optimizer=muon" in caplog.text) == warned, overrides


def test_llama_whose_tokenizer_adds_bos_samples_as_transformers_does(tmp_path):
    from tests.hf_tokenizer_helpers import llama2_dir

    model_dir = llama2_dir(tmp_path / "model")  # SentencePiece-style BPE: <s> before every text
    tokenizer = load_tokenizer(model_dir)
    assert tokenizer.doc_prefix_ids == (1,)
    save_hf_model("llama", model_dir, tokenizer.vocab_size, mute=half_characters(tokenizer, tokenizer.vocab_size))
    assert generate_py_text(model_dir, PROMPT) == pipeline_text(model_dir, PROMPT)
