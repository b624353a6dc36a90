import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from fragment_llm.errors import ConfigError
from fragment_llm.training.config_checks import validate_train_config
from tests.conftest import compose_config, compose_train


def test_default_config_composes_with_canonical_keys(tmp_path):
    cfg = compose_train(tmp_path)
    for key in ("n_layer", "n_head", "n_embd", "block_size", "dropout", "bias"):
        assert key in cfg.model
    for key in ("path", "batch_size", "num_workers", "val_fraction"):
        assert key in cfg.data
    for key in ("lr", "min_lr", "weight_decay", "betas", "warmup_steps"):
        assert key in cfg.optimizer
    assert cfg.tokenizer.kind == "bpe"
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.ckpt_path is None and isinstance(cfg.seed, int)
    validate_train_config(cfg)


def test_default_data_is_the_python_standard_library(tmp_path):
    import sysconfig

    cfg = compose_train(tmp_path)
    assert cfg.data.path == sysconfig.get_paths()["stdlib"]
    assert "site-packages" in cfg.data.exclude_dirs and "test" in cfg.data.exclude_dirs


@pytest.mark.parametrize("override", ["model.n_layr=4", "trainer.max_step=5", "data.batchsize=3"])
def test_misspelt_key_fails_at_compose_time(tmp_path, override):
    with pytest.raises(ConfigCompositionException) as exc:
        compose_train(tmp_path, [override])
    assert isinstance(exc.value.__cause__, ConfigKeyError) or "not in" in str(exc.value.__cause__)


@pytest.mark.parametrize("override", ["model.n_layer=abc", "data.batch_size=1.5", "model.bias=maybe"])
def test_wrong_type_fails_at_compose_time(tmp_path, override):
    with pytest.raises(ConfigCompositionException) as exc:
        compose_train(tmp_path, [override])
    assert isinstance(exc.value.__cause__, ValidationError)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["model.n_embd=100", "model.n_head=3"], "model.n_embd"),
        (["model.block_size=0"], "model.block_size"),
        (["model.dropout=1.5"], "model.dropout"),
        (["tokenizer.vocab_size=100"], "tokenizer.vocab_size"),
        (["data.batch_size=0"], "data.batch_size"),
        (["data.val_fraction=0"], "data.val_fraction"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
        (["trainer.max_steps=0"], "trainer.max_steps"),
        (["optimizer.min_lr=1.0"], "optimizer.min_lr"),
        (["optimizer.betas=[0.9]"], "optimizer.betas"),
        (["tokenizer.kind=wordpiece"], "tokenizer.kind"),
    ],
)
def test_cross_field_errors_name_the_key(tmp_path, overrides, key):
    cfg = compose_train(tmp_path, overrides)
    with pytest.raises(ConfigError) as exc:
        validate_train_config(cfg)
    assert str(exc.value).startswith(key + "=")


def test_shakespeare_char_cpu_preset_is_nanogpts_recipe(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=shakespeare_char_cpu", "data.path=/x/input.txt"])
    assert cfg.tokenizer.kind == "char"
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, cfg.model.block_size) == (4, 4, 128, 64)
    assert cfg.model.dropout == 0.0 and cfg.data.batch_size == 12 and cfg.data.val_fraction == 0.1
    assert cfg.trainer.max_steps == 2000 and cfg.optimizer.warmup_steps == 100
    assert (cfg.optimizer.lr, cfg.optimizer.min_lr) == (1e-3, 1e-4)
    assert list(cfg.optimizer.betas) == [0.9, 0.99]
    validate_train_config(cfg)


def test_model_presets_compose(tmp_path):
    assert compose_train(tmp_path, ["model=tiny"]).model.n_embd == 32
    assert compose_train(tmp_path, ["model=small"]).model.n_layer == 6


def test_debug_preset_shrinks_the_run(tmp_path):
    cfg = compose_train(tmp_path, ["debug=fast"])
    assert cfg.trainer.max_steps <= 50 and cfg.model.n_embd == 32


def test_generate_config_composes():
    cfg = compose_config("generate", ["runs_dir=/tmp/x"])
    assert cfg.ckpt is None and cfg.prompt is None
    assert {"max_new_tokens", "temperature", "top_k", "seed"} <= set(cfg.keys())
    with pytest.raises(ConfigCompositionException):
        compose_config("generate", ["temprature=1.0"])


def test_shakespeare_char_preset_is_nanogpts_gpu_recipe(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=shakespeare_char", "data.path=/x/input.txt"])
    m = cfg.model
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.dropout) == (6, 6, 384, 256, 0.2)
    assert cfg.data.batch_size == 64 and cfg.trainer.max_steps == 5000 and cfg.tokenizer.kind == "char"
    assert cfg.trainer.precision == "auto" and m.compile
    validate_train_config(cfg)


def test_gpt2_small_preset_is_124m_parameters(tmp_path):
    import torch

    from fragment_llm.model.gpt import GPT, GPTConfig

    cfg = compose_train(tmp_path, ["experiment=gpt2_small", "data.path=/x"])
    shape = {k: v for k, v in cfg.model.items() if k != "compile"}
    with torch.device("meta"):  # no memory, no time: only the shapes
        gpt = GPT(GPTConfig(**shape, vocab_size=cfg.tokenizer.vocab_size))
    assert round(gpt.num_params(non_embedding=False) / 1e6) == 124
    assert cfg.tokens_per_step == 12 * 1024 * 40 and cfg.trainer.accumulate_grad_batches == 1
    validate_train_config(cfg)


@pytest.mark.parametrize("preset", ["fast", "fast_dev_run", "overfit", "profiler"])
def test_debug_presets_compose(tmp_path, preset):
    cfg = compose_train(tmp_path, [f"debug={preset}"])
    validate_train_config(cfg)
    assert cfg.task_name.startswith("debug")


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["resume=/x", "ckpt_path=last"], "resume"),
        (["tokens_per_step=0"], "tokens_per_step"),
        (["tokens_per_step=4096", "trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches"),
        (["callbacks.samples.every_n_validations=0"], "callbacks.samples.every_n_validations"),
    ],
)
def test_training_option_errors_name_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError) as exc:
        validate_train_config(compose_train(tmp_path, overrides))
    assert str(exc.value).startswith(key + "=")


def test_tokens_per_step_derives_the_accumulation():
    from fragment_llm.training.run import accumulate_batches

    assert accumulate_batches(491_520, 12, 1024, 1) == 40
    assert accumulate_batches(491_520, 12, 1024, 8) == 5
    assert accumulate_batches(1000, 8, 64, 1) == 2  # 1024 tokens: the nearest whole number of batches
    assert accumulate_batches(10, 8, 64, 4) == 1
