"""The data and tokenizer config keys: typed at compose time, checked before any data work."""

import pytest
from hydra.errors import ConfigCompositionException

from fragment_llm.config import validate_data_config
from fragment_llm.errors import ConfigError
from fragment_llm.training.config_checks import validate_train_config
from tests.conftest import compose_config, compose_train


def test_data_text_exposes_formats_cleaning_and_sharding(tmp_path):
    cfg = compose_train(tmp_path, ["data=text", "data.path=x"])
    assert {".txt", ".md", ".jsonl", ".parquet"} <= set(cfg.data.extensions)
    assert cfg.data.text_field == "text" and cfg.data.strict is False and cfg.data.cleaning.dedup is True
    assert cfg.data.cleaning.collapse_whitespace is False  # off by default
    assert cfg.tokenizer.special_tokens == ["<|endoftext|>"] and cfg.tokenizer.path is None
    validate_train_config(cfg)


def test_prepare_config_is_the_training_config(tmp_path):
    prep = compose_config("prepare", [f"paths.root_dir={tmp_path}", "data=text", "data.path=x"])
    train = compose_train(tmp_path, ["data=text", "data.path=x"])
    assert prep.task_name == "prepare" and prep.data == train.data and prep.tokenizer == train.tokenizer


@pytest.mark.parametrize("override", ["data.cleaning.nfcc=false", "data.textfield=body", "tokenizer.train_char=5"])
def test_misspelt_data_keys_fail_at_compose_time(tmp_path, override):
    with pytest.raises(ConfigCompositionException):
        compose_train(tmp_path, [override])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("tokenizer.special_tokens=['<|pad|>']", "tokenizer.special_tokens"),
        ("tokenizer.special_tokens=['<|endoftext|>','<|endoftext|>']", "tokenizer.special_tokens"),
        ("tokenizer.vocab_size=256", "tokenizer.vocab_size"),
        ("tokenizer.vocab_size=2000000", "tokenizer.vocab_size"),
        ("tokenizer.train_chars=0", "tokenizer.train_chars"),
        ("data.prepare_workers=0", "data.prepare_workers"),
        ("data.max_file_mb=0", "data.max_file_mb"),
        ("data.shard_tokens=10", "data.shard_tokens"),
        ("data.text_field=''", "data.text_field"),
        ("data.extensions=[]", "data.extensions"),
        ("data.cleaning.min_doc_chars=-1", "data.cleaning.min_doc_chars"),
        ("data.val_fraction=1.0", "data.val_fraction"),
        ("data=text", "data.path"),  # data=text leaves the path to the user: a one-line error, not a traceback
    ],
)
def test_bad_data_values_name_their_key(tmp_path, override, key):
    cfg = compose_train(tmp_path, [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_data_config(cfg.data, cfg.tokenizer)
