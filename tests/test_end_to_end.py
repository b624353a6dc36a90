"""The whole pipeline, as a user runs it: compose the real config, train, sample."""

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fragment_llm.data.tokenizer import tokenizer_from_json
from fragment_llm.inference import load_model
from fragment_llm.training.run import train
from tests.conftest import REPO_ROOT, compose_train, run_python

TINY = [
    "data=text",
    "model=tiny",
    "tokenizer.vocab_size=512",
    "data.batch_size=16",
    "optimizer.lr=3e-3",
    "optimizer.warmup_steps=10",
    "trainer.max_steps=80",
    "trainer.val_check_interval=40",
    "trainer.limit_val_batches=8",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=5",
    'callbacks.samples.prompts=["KING:",null]',
    "callbacks.samples.max_new_tokens=30",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from tests.conftest import corpus_text

    tmp = tmp_path_factory.mktemp("e2e")
    corpus = tmp / "corpus" / "input.txt"
    corpus.parent.mkdir()
    corpus.write_text(corpus_text(200_000), encoding="utf-8")
    cfg = compose_train(tmp, [*TINY, f"data.path={corpus}"])
    return train(cfg), tmp


def test_training_lowers_val_loss_and_writes_the_run(trained_run):
    result, _ = trained_run
    run = Path(result["run_dir"])
    assert result["global_step"] == 80
    assert result["val_loss"] < result["initial_val_loss"] - 0.5, result
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert Path(result["best_ckpt"]).is_file()
    assert (run / "tokenizer.json").is_file() and (run / "config.yaml").is_file()
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    scalars = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "hp/best_val_loss"}
    assert scalars | {"val/loss", "val/ppl", "val/bpb"} <= set(acc.Tags()["scalars"])
    val = {e.step: e.value for e in acc.Scalars("val/loss")}
    ppl = {e.step: e.value for e in acc.Scalars("val/ppl")}
    assert ppl[max(ppl)] == pytest.approx(math.exp(val[max(val)]), rel=1e-5)
    plugins = plugin_event_accumulator.EventAccumulator(str(run / "tensorboard"))
    plugins.Reload()
    assert "_hparams_/session_start_info" in plugins.PluginTagToContent("hparams")  # config linked to best val/loss


def test_samples_from_fixed_prompts_are_in_tensorboard(trained_run):
    result, _ = trained_run
    acc = plugin_event_accumulator.EventAccumulator(str(Path(result["run_dir"]) / "tensorboard"))
    acc.Reload()
    texts = {tag: acc.Tensors(tag) for tag in acc.PluginTagToContent("text")}
    assert set(texts) == {"samples/0/text_summary", "samples/1/text_summary"}  # "KING:" and unconditional
    kings = texts["samples/0/text_summary"]
    assert [e.step for e in kings] == [40, 80]  # after each validation
    first = kings[0].tensor_proto.string_val[0].decode()
    assert "KING:" in first and len(first) > 40


def test_checkpoint_is_self_describing_and_safe_to_load(trained_run):
    result, _ = trained_run
    ckpt = torch.load(result["last_ckpt"], map_location="cpu", weights_only=True)
    tokenizer = tokenizer_from_json(ckpt["tokenizer"])
    assert ckpt["hyper_parameters"]["model"]["vocab_size"] == tokenizer.vocab_size <= 512
    assert ckpt["hyper_parameters"]["model"]["n_layer"] == 2 and ckpt["global_step"] == 80


def test_generation_from_the_checkpoint_returns_text(trained_run):
    result, _ = trained_run
    loaded = load_model(Path(result["run_dir"]))  # a run directory works as well as a file
    texts = loaded.generate("KING:", max_new_tokens=40, temperature=0.8, top_k=50, seed=3, num_samples=2)
    assert len(texts) == 2 and all(t.startswith("KING:") and len(t) > len("KING:") for t in texts)
    assert texts == loaded.generate("KING:", max_new_tokens=40, temperature=0.8, top_k=50, seed=3, num_samples=2)
    assert loaded.generate(None, max_new_tokens=10, seed=0)[0]  # unconditional


def test_train_and_generate_scripts_as_a_user_runs_them(trained_run, tmp_path):
    _, tmp = trained_run
    corpus = tmp / "corpus" / "input.txt"
    proc = run_python(
        [
            str(REPO_ROOT / "train.py"),
            *TINY,
            "trainer.max_steps=30",
            "trainer.val_check_interval=15",
            f"data.path={corpus}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "last.ckpt").is_file()
    assert f"Run directory: {runs[0]}" in proc.stdout and "python generate.py ckpt=" in proc.stdout

    gen = run_python([str(REPO_ROOT / "generate.py"), "prompt=KING:", "max_new_tokens=20"], cwd=tmp_path)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert gen.stdout.startswith("KING:") and len(gen.stdout) > 10
    assert "newest run" in gen.stderr and str(runs[0]) in gen.stderr


def test_user_errors_are_one_clear_line_not_a_traceback(tmp_path):
    bad = run_python([str(REPO_ROOT / "train.py"), "data=text", f"data.path={tmp_path}/missing"], cwd=tmp_path)
    assert bad.returncode == 2 and "data.path" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_python([str(REPO_ROOT / "train.py"), "model.n_embd=100", "model.n_head=3"], cwd=tmp_path)
    assert bad.returncode == 2 and "model.n_embd=100" in bad.stderr and "Traceback" not in bad.stderr
    typo = run_python([str(REPO_ROOT / "train.py"), "model.n_layr=4"], cwd=tmp_path)
    assert typo.returncode != 0 and "n_layr" in typo.stderr and "Traceback" not in typo.stderr
    gen = run_python([str(REPO_ROOT / "generate.py")], cwd=tmp_path)
    assert gen.returncode == 2 and "no trained run found" in gen.stderr
