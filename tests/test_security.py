"""Trust boundaries: crafted run directories, checkpoints and tokenizer files are refused, and nothing runs.

Each attack is first shown to be live (the payload, applied without our checks, creates a marker file),
then refused through the real entry point with the marker still absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fragment_llm import load_model
from fragment_llm.checkpoint_file import load_checkpoint_safely
from fragment_llm.data.tokenizer import load_tokenizer, train_tokenizer
from fragment_llm.errors import CheckpointError, ConfigError, TokenizerError
from fragment_llm.model import gpt
from fragment_llm.training.override_guard import (
    CONF_DIR,
    _fits,
    check_stored_override,
    config_groups,
    is_location_key,
    schema_type,
)
from fragment_llm.training.resume import recompose_for_resume
from fragment_llm.training.run import train
from fragment_llm.training.strategies import WeightsOnlyFSDPStrategy, check_resume_loader, fsdp_strategy
from fragment_llm.training.targets import allowed_targets
from tests.conftest import compose_train, corpus_text
from tests.inference_helpers import char_tokenizer, save_checkpoint
from tests.training_helpers import TINY, run_train_script, train_tiny_run


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny real run (its corpus, its run directory), trained for 2 steps."""
    return train_tiny_run(tmp_path_factory.mktemp("real"))


def _crafted_run(real_run, where: Path, overrides=(), **model_claims) -> Path:
    """A run directory holding the real run's last.ckpt with `overrides` stored and the model claims changed."""
    checkpoint = load_checkpoint_safely(real_run[1] / "checkpoints" / "last.ckpt")
    checkpoint["hyper_parameters"]["overrides"] = list(overrides)
    checkpoint["hyper_parameters"]["model"].update(model_claims)
    (where / "checkpoints").mkdir(parents=True)
    torch.save(checkpoint, where / "checkpoints" / "last.ckpt")
    return where


def _resume(tmp_path: Path, run: Path, *now: str):
    """What train.py does on `resume=<run> NOW...`: the run's stored overrides, checked, then composed."""
    today = [f"resume={run}", f"paths.root_dir={tmp_path}", f"paths.output_dir={run}", *now]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return recompose_for_resume(compose("train", today), today)


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", ["paths.output_dir=unused", *overrides])


def _escaped_target_override(marker: Path) -> str:
    # OmegaConf's oc.create parses its argument as YAML, where "\u005f" decodes to "_": no literal _target_.
    return f"""trainer.strategy='${{oc.create:"{{\\"\\u005ftarget_\\": os.mkdir, path: {marker}}}"}}'"""


def test_a_resolver_with_an_escaped_target_is_refused(tmp_path, real_run):
    marker = tmp_path / "marker"
    payload = _escaped_target_override(marker)
    assert "_target_" not in payload
    instantiate(_compose(payload).trainer.strategy)  # live: unchecked, it runs os.mkdir
    assert marker.is_dir()
    marker.rmdir()

    run = _crafted_run(real_run, tmp_path / "run", [payload])
    with pytest.raises(CheckpointError, match=r"last\.ckpt: refused its stored override .*interpolations"):
        _resume(tmp_path, run, f"data.path={real_run[0]}")
    proc = run_train_script([f"resume={run}", f"data.path={real_run[0]}"], cwd=tmp_path)  # as a user runs it
    assert proc.returncode == 2 and "refused its stored override" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_a_group_choice_that_is_a_path_is_refused(tmp_path, real_run):
    marker, evil = tmp_path / "marker", tmp_path / "elsewhere" / "evil.yaml"
    evil.parent.mkdir()
    evil.write_text(f"strategy:\n  _target_: os.mkdir\n  path: {marker}\n")
    payload = f"trainer={os.path.relpath(evil.with_suffix(''), CONF_DIR / 'trainer')}"
    assert payload.startswith("trainer=../")
    instantiate(_compose(payload).trainer.strategy)  # live: Hydra loads any YAML file as the group's choice
    assert marker.is_dir()
    marker.rmdir()

    run = _crafted_run(real_run, tmp_path / "run", [payload])
    with pytest.raises(CheckpointError, match=r"last\.ckpt: refused .*must name one of its files \(no paths\)"):
        _resume(tmp_path, run, f"data.path={real_run[0]}")
    assert not marker.exists()


def test_an_environment_lookup_is_refused(tmp_path, real_run, monkeypatch):
    monkeypatch.setenv("FRAGMENT_TEST_SECRET", "hunter2")
    payload = "callbacks.samples.prompts=['${oc.env:FRAGMENT_TEST_SECRET}']"
    assert list(_compose(payload).callbacks.samples.prompts) == ["hunter2"]  # live: would be sampled and logged
    run = _crafted_run(real_run, tmp_path / "run", [payload])
    with pytest.raises(CheckpointError, match=r"interpolations \(\$\{\.\.\.\}\) are config code"):
        _resume(tmp_path, run, f"data.path={real_run[0]}")
    assert not (run / "config.yaml").exists()


def test_data_path_and_other_locations_come_from_todays_command_line(tmp_path, real_run):
    private = tmp_path / "private.txt"
    private.write_text("not for training\n")
    stored = [f"data.path={private}", "model.dropout=0.1", "tokenizer=char"]
    run = _crafted_run(real_run, tmp_path / "run", stored)
    with pytest.raises(CheckpointError, match=r"'data\.path=.*private\.txt'.*may not choose where data is read"):
        _resume(tmp_path, run)
    cfg, kept = _resume(tmp_path, run, f"data.path={real_run[0]}")  # given today: today's value wins
    assert cfg.data.path == str(real_run[0]) and cfg.model.dropout == 0.1 and cfg.tokenizer.kind == "char"
    assert not any(str(private) in o for o in kept)
    for key in ("paths.log_dir", "callbacks.model_checkpoint.dirpath", "logger.save_dir", "tokenizer.path"):
        with pytest.raises(CheckpointError, match="may not choose where data is read from or written to"):
            check_stored_override(f"{key}=/somewhere/else", set(), "x.ckpt")
    # A stored override that today's command line replaces is dropped, whatever it says.
    check_stored_override("data.path=${oc.env:CORPUS}/x", {"data.path"}, "x.ckpt")


@pytest.mark.parametrize("claims", [{"n_layer": 10**6}, {"n_embd": 10**9, "n_head": 1}, {"vocab_size": 10**8}])
def test_absurd_model_claims_are_refused_before_a_model_is_built(tmp_path, real_run, monkeypatch, claims):
    built = []
    init = gpt.GPT.__init__
    monkeypatch.setattr(gpt.GPT, "__init__", lambda self, config: (built.append(config), init(self, config))[-1])
    run = _crafted_run(real_run, tmp_path / "run", **claims)
    ckpt = run / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"last\.ckpt: it claims .*refused"):
        load_model(ckpt, device="cpu")
    with pytest.raises(CheckpointError, match=r"last\.ckpt: it claims .*refused"):
        train(compose_train(tmp_path, [*TINY, f"data.path={real_run[0]}", f"ckpt_path={ckpt}"]))
    assert built == []  # not even on the meta device: the cheap bounds from the tensors refused it
    assert not list(tmp_path.glob("outputs/.data_cache/*"))  # refused before any data work


def test_weights_that_are_broadcast_views_or_of_another_shape_are_refused(tmp_path):
    tokenizer = char_tokenizer()
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", tokenizer)
    data = load_checkpoint_safely(ckpt)
    state, hp = data["state_dict"], data["hyper_parameters"]["model"]
    # A 30000 x 4096 embedding over 4 stored bytes: a weights-only load accepts it; building it would not fit.
    huge = torch.zeros(1).expand(30_000, 4096)
    hp.update(vocab_size=30_000, n_embd=4096, n_head=1)
    torch.save({**data, "state_dict": {**state, "model.transformer.wte.weight": huge}}, tmp_path / "view.ckpt")
    with pytest.raises(CheckpointError, match="claims 122,880,000 elements but stores fewer"):
        load_model(tmp_path / "view.ckpt", device="cpu")
    data = load_checkpoint_safely(ckpt)  # the claims match the embedding, but a block's weights are cut short
    data["state_dict"]["model.transformer.h.0.mlp.c_fc.weight"] = torch.zeros(3, 32)
    torch.save(data, tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match=r"h\.0\.mlp\.c_fc\.weight is \[3, 32\], the config implies \[128, 32\]"):
        load_model(tmp_path / "cut.ckpt", device="cpu")
    assert load_model(ckpt, device="cpu").model.config.n_layer == 2  # the genuine one loads


def _with_split_pattern(tokenizer_json: str, regex: str) -> str:
    spec = json.loads(tokenizer_json)
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {"Regex": regex}
    return json.dumps(spec)


def test_a_tokenizer_file_with_a_backtracking_regex_is_refused_unparsed(tmp_path, monkeypatch):
    import tokenizers

    bpe = train_tokenizer("bpe", [corpus_text(5_000)], vocab_size=300)
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", bpe)
    parsed = []

    class Spy:  # Hugging Face's parser, recording what reaches it
        @staticmethod
        def from_str(text):
            parsed.append(text)

    monkeypatch.setattr(tokenizers, "Tokenizer", Spy)
    path = tmp_path / "tokenizer.json"
    path.write_text(_with_split_pattern(bpe.to_json(), r"(\s*a+)+$"))  # exponential on " a a a ... a!"
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: pre_tokenizer\.pretokenizers\[0\]: pattern .*"):
        load_tokenizer(path)
    spec = json.loads(bpe.to_json())
    spec["normalizer"] = {"type": "Replace", "pattern": {"Regex": "(x+x+)+y"}, "content": ""}
    path.write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: normalizer: 'Replace' is not an accepted step"):
        load_tokenizer(path)
    # Inside a checkpoint too: generate.py refuses it by name.
    data = load_checkpoint_safely(ckpt)
    data["tokenizer"] = _with_split_pattern(data["tokenizer"], r"(\s*a+)+$")
    torch.save(data, ckpt)
    with pytest.raises(TokenizerError, match=r"embedded tokenizer\): pre_tokenizer"):
        load_model(ckpt, device="cpu")
    assert parsed == []  # refused before Hugging Face's parser (and its regex engine) saw the files


def test_only_targets_named_in_conf_are_instantiated(tmp_path, real_run):
    marker = tmp_path / "marker"
    assert {"lightning.pytorch.Trainer", "fragment_llm.training.strategies.fsdp_strategy"} <= allowed_targets()
    # Given on today's command line (not from a checkpoint): composed, then refused before instantiation.
    cfg = compose_train(tmp_path, [*TINY, f"data.path={real_run[0]}", _escaped_target_override(marker)])
    with pytest.raises(ConfigError, match=r"trainer\.strategy\._target_='os\.mkdir': not a target"):
        train(cfg)
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_checkpoint_callback_state_cannot_name_files_outside_the_run(tmp_path, real_run):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = _crafted_run(real_run, tmp_path / "run")
    ckpt = run / "checkpoints" / "last.ckpt"
    data = load_checkpoint_safely(ckpt)
    (name,) = [k for k in data["callbacks"] if k.startswith("ModelCheckpoint")]
    dotted = str(run / "checkpoints" / ".." / ".." / "victim.txt")  # lexically "inside" checkpoints/
    data["callbacks"][name].update(dirpath=str(run / "checkpoints"), best_model_path=dotted, best_k_models={dotted: 0})
    torch.save(data, ckpt)
    overrides = [*TINY, f"data.path={real_run[0]}", f"ckpt_path={ckpt}", "trainer.max_steps=6"]
    with pytest.raises(CheckpointError, match="checkpoint-callback state names .*victim"):
        train(compose_train(tmp_path, overrides))
    assert victim.read_text() == "keep me"


def test_a_run_directory_holding_symlinks_is_not_resumed(tmp_path, real_run):
    run = _crafted_run(real_run, tmp_path / "run")
    (tmp_path / "elsewhere").mkdir()
    (run / "tensorboard").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointError, match=r"holds symbolic links .*tensorboard"):
        train(compose_train(tmp_path, [*TINY, f"data.path={real_run[0]}", f"ckpt_path={run}/checkpoints/last.ckpt"]))
    proc = run_train_script([f"resume={run}", f"data.path={real_run[0]}"], cwd=tmp_path)  # as a user runs it
    assert proc.returncode == 2 and "holds symbolic links" in proc.stderr and "Traceback" not in proc.stderr
    assert list((tmp_path / "elsewhere").iterdir()) == []  # Hydra's log and record went to a fresh directory


def test_fsdp_resume_reads_with_the_weights_only_loader(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"state_dict": {}, "trap": Payload()}, tmp_path / "evil.ckpt")
    strategy = fsdp_strategy()
    assert isinstance(strategy, WeightsOnlyFSDPStrategy)
    with pytest.raises(CheckpointError, match="refused to load"):
        strategy.load_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / ".metadata").write_bytes(b"")
    with pytest.raises(CheckpointError, match="Sharded FSDP checkpoint directories are not loaded"):
        strategy.load_checkpoint(tmp_path / "sharded")

    # A genuine full checkpoint: its weights land in the module (FSDP itself needs a GPU; an unwrapped module
    # takes the same _load_raw_module_state path Lightning uses), and the rest of the checkpoint is returned.
    from unittest import mock

    from lightning.pytorch.trainer.states import TrainerFn

    from fragment_llm.training.lit_module import LitGPT
    from tests.inference_helpers import MODEL, OPT

    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", char_tokenizer())
    module = LitGPT(model={**MODEL, "vocab_size": char_tokenizer().vocab_size}, optimizer=OPT)
    module._trainer = mock.Mock(state=mock.Mock(fn=TrainerFn.VALIDATING))
    strategy.connect(module)
    loaded = strategy.load_checkpoint(ckpt)
    want = load_checkpoint_safely(ckpt)["state_dict"]
    assert all(torch.equal(module.state_dict()[k], v) for k, v in want.items())
    assert "state_dict" not in loaded and loaded["global_step"] == 0


def test_strategies_with_unvetted_loaders_cannot_resume():
    from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

    from fragment_llm.training.checkpoint_io import SafeCheckpointIO

    check_resume_loader(fsdp_strategy())
    check_resume_loader(SingleDeviceStrategy("cpu", checkpoint_io=SafeCheckpointIO()))
    with pytest.raises(ConfigError, match="FSDPStrategy reads checkpoints with a loader that may unpickle code"):
        check_resume_loader(FSDPStrategy())  # trainer.strategy=fsdp (Lightning's own)
    with pytest.raises(ConfigError, match="may unpickle code"):
        check_resume_loader(SingleDeviceStrategy("cpu"))  # Lightning's default checkpoint_io


# Attacks on the guard itself: each is refused (decoded values are inspected, not the raw text).
REFUSED = [
    "trainer.strategy='${oc.decode:\"{_target_: os.system}\"}'",
    "trainer.devices=[0, '${oc.select:hydra.run.dir}']",  # an interpolation nested in a list
    "trainer.strategy={name: ddp}",  # a mapping on a key typed Any could be instantiated
    "trainer.strategy=[{_target_: os.system}]",
    "data.extensions=['.txt', {a: '${oc.env:HOME}'}]",
    "callbacks.samples.prompts=['\\${oc.env:HOME}']",  # escaped for OmegaConf: still refused
    "'trainer.max_steps'=5",  # a key name in quotes
    "trainer.max_steps@trainer=5",
    "trainer@_global_=cpu",  # repackaging a group
    "trainer/strategy=ddp",  # no such (sub)group
    "hydra/launcher=slurm",
    "hydra.job.chdir=true",
    "+trainer.foo=1",
    "++trainer.max_steps=1",
    "~trainer.max_steps",
    "optimizer.lr=choice(1e-3, 3e-3)",
    "optimizer.lr=1e-3,3e-3",
    "optimizer.lr=range(1,3)",
    "optimizer.lr=str(0.1)",  # Hydra's cast turns it into a string: not a float
    "trainer._target_=os.system",
    "callbacks.model_checkpoint._target_=os.system",
    "model.n_layer=true",
    "model.n_layer='4'",
    "data.batch_size=[8]",
    "trainer=../trainer/cpu",
    "trainer=cpu/../ddp",
    "experiment=nonexistent",
    "model.nonexistent=1",
    "callbacks.samples={}",
    "task_name=" + "x" * 20_000,  # very long
    "task_name=???",  # a missing value
]
# Accepted, and harmless: literal values of the schema's types, and our own config files.
ACCEPTED = [
    "trainer=ddp_cpu",
    "callbacks=default",
    "experiment=shakespeare_char_cpu",
    "debug=profiler",
    "callbacks.samples=null",
    "trainer.strategy=ddp",
    r"trainer.strategy='\x5ftarget_: os.system'",  # nothing decodes it: a strategy name Lightning will not know
    "trainer.devices=[0,1]",
    "trainer.precision=32",
    r"callbacks.samples.prompts=['ROMEO:', null, 'tab\tquote\"']",
]


@pytest.mark.parametrize("override", REFUSED)
def test_attacks_on_the_guard_are_refused(override):
    with pytest.raises(CheckpointError, match=r"^x\.ckpt: refused its stored override"):
        check_stored_override(override, set(), "x.ckpt")


@pytest.mark.parametrize("override", ACCEPTED)
def test_plain_settings_and_our_own_config_files_are_accepted(override):
    check_stored_override(override, set(), "x.ckpt")


LEAF_KEYS = sorted(
    f"{group}.{name}"
    for group in ("data", "tokenizer", "model", "optimizer", "trainer", "callbacks.samples", "logger", "paths")
    for name in ("path", "batch_size", "kind", "vocab_size", "n_layer", "dropout", "lr", "betas", "strategy",
                 "devices", "max_steps", "precision", "prompts", "save_dir", "log_dir", "_target_", "x")
)  # fmt: skip
KEYS = st.sampled_from([*LEAF_KEYS, *sorted(config_groups()), "hydra.run.dir", "hydra/launcher", "seed", "resume"])
FRAGMENTS = st.sampled_from(
    ["${", "}", "oc.env:HOME", "oc.create:", "\\u005f", "\\x5f", "_target_", "+", "~", "@", "'", '"', "/", "..",
     "[", "]", "{", "}", ",", ":", " ", "=", "(", ")", "choice", "null", "true", "1", "3.5", "-2", "ddp", "cpu",
     "tiny", "a", "\\", "\n", "é"]
)  # fmt: skip
VALUES = st.lists(st.one_of(FRAGMENTS, st.text(max_size=3)), max_size=12).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(["", "+", "++", "~"]), key=KEYS, package=st.sampled_from(["", "@x"]), value=VALUES)
def test_any_stored_override_is_refused_or_plain_data_for_our_schema(prefix, key, package, value):
    text = f"{prefix}{key}{package}={value}"
    try:
        override = check_stored_override(text, set(), "x.ckpt")
    except CheckpointError:
        return  # refused: fine; any other exception fails the test
    key, value = override.key_or_group, override.value()
    assert not prefix and not package and not is_location_key(key) and not key.startswith("hydra")
    assert "${" not in repr(value) and "_target_" not in repr(value)
    if key in config_groups():
        assert value is None or (CONF_DIR / key / f"{value}.yaml").is_file()
    else:
        assert "_target_" not in key and _fits(value, schema_type(key)) and not isinstance(value, dict)
