"""Jobs launched as many processes by torchrun or srun: one run directory, one writer per file, one cache build."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fragment_llm.training import launch
from fragment_llm.training.rundir import _hydra_subdir, _run_dir
from tests.conftest import REPO_ROOT, corpus_text, python_env

TORCHRUN_ENV = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE"}
SLURM_ENV = {"SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"}


@pytest.fixture
def launcher_env(monkeypatch):
    """A clean slate: no launcher variables from the environment pytest runs in, no problem left over."""
    for key in TORCHRUN_ENV | SLURM_ENV | {"MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT"}:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(launch, "_problem", None)
    return monkeypatch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_and_sizes_as_the_launchers_announce_them(launcher_env):
    assert launch.launched_rank_and_size() == (0, 1)
    launcher_env.setenv("SLURM_JOB_ID", "77")  # an allocation (salloc, a batch script): not a task of a step
    launcher_env.setenv("SLURM_NTASKS", "8")
    assert launch.launched_rank_and_size() == (0, 1)
    launcher_env.setenv("SLURM_STEP_ID", "0")
    launcher_env.setenv("SLURM_PROCID", "5")
    assert launch.launched_rank_and_size() == (5, 8)
    launcher_env.setenv("RANK", "3")  # torchrun (inside srun or not) wins
    launcher_env.setenv("WORLD_SIZE", "4")
    assert launch.launched_rank_and_size() == (3, 4) and not launch.is_first_process()


def test_under_torchrun_every_rank_takes_rank_0s_run_directory(launcher_env, tmp_path):
    from torch.distributed import TCPStore

    port = _free_port()
    store = TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)  # torchrun's agent runs one
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
    }.items():
        launcher_env.setenv(key, value)
    launcher_env.setenv("WORLD_SIZE", "2")
    root = str(tmp_path / "outputs" / "train")
    launcher_env.setenv("RANK", "0")
    chosen = _run_dir(root, f"{root}/2026-01-01_00-00-00", None, None)
    launcher_env.setenv("RANK", "1")  # started a second later: its clock says otherwise
    assert _run_dir(root, f"{root}/2026-01-01_00-00-01", None, None) == chosen
    assert chosen == f"{root}/2026-01-01_00-00-00" and launch._problem is None
    assert _hydra_subdir(chosen, "t") is None  # only rank 0 records the command in .hydra/
    del store


def test_under_srun_the_run_directory_is_named_after_the_job(launcher_env, tmp_path):
    for key, value in {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}.items():
        launcher_env.setenv(key, value)
    root = str(tmp_path)
    assert _run_dir(root, f"{root}/2026-01-01_00-00-00", None, None) == f"{root}/slurm-4242.0"
    launch.check_run_dir_agreed()  # nothing to report


def test_another_launcher_must_name_the_run_directory(launcher_env, tmp_path):
    from fragment_llm.errors import ConfigError

    launcher_env.setenv("RANK", "0")
    launcher_env.setenv("WORLD_SIZE", "2")  # set by hand or by a launcher that runs no store for us
    _run_dir(str(tmp_path), str(tmp_path / "fresh"), None, None)
    with pytest.raises(ConfigError, match=r"hydra\.run\.dir=<dir>"):
        launch.check_run_dir_agreed()


def test_other_ranks_log_to_their_own_file(launcher_env, tmp_path):
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "train.log")
    root.addHandler(handler)
    try:
        launcher_env.setenv("RANK", "1")
        launcher_env.setenv("WORLD_SIZE", "2")
        launch.log_to_own_file()
        files = [Path(h.baseFilename).name for h in root.handlers if isinstance(h, logging.FileHandler)]
        assert "train_rank1.log" in files and "train.log" not in files
    finally:
        for h in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(h)
            h.close()


def _two_nodes(cwd: Path, corpus: Path, *extra: str) -> list[subprocess.CompletedProcess]:
    """train.py as two torchrun "nodes" of one process each on this machine, the second started later."""
    port = _free_port()
    args = [
        "data=text", f"data.path={corpus}", "tokenizer=char", "model=tiny", "data.batch_size=8",
        "optimizer.warmup_steps=2", "trainer.val_check_interval=2", "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.samples=null",
        "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", *extra,
    ]  # fmt: skip
    procs = []
    for node in (0, 1):
        torchrun = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={node}",
            "--master-addr=127.0.0.1", f"--master-port={port}", str(REPO_ROOT / "train.py"), *args,
        ]  # fmt: skip
        out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        procs.append(subprocess.Popen(torchrun, cwd=cwd, env=python_env(), **out))
        time.sleep(2)
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out))
    return results


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs the gloo backend")
def test_two_torchrun_nodes_make_one_run_and_resume_it(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(40_000), encoding="utf-8")

    first = _two_nodes(tmp_path, corpus, "trainer.max_steps=4")
    assert all(r.returncode == 0 for r in first), first[0].stdout[-3000:] + first[1].stdout[-3000:]
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1, runs  # one run directory for both nodes
    run = runs[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best-step000004.ckpt", "last.ckpt"]
    assert json.loads((run / "result.json").read_text())["steps"] == 4
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert (run / "train.log").is_file() and (run / "train_rank1.log").is_file()
    assert not [p for p in run.rglob(".*") if "tmp" in p.name]  # no temporary file left behind
    caches = tmp_path / "outputs" / ".data_cache"
    assert len(list(caches.glob("*/manifest.json"))) == 1 and not list(caches.glob(".*.tmp"))
    assert sum(r.stdout.count("Run directory:") for r in first) == 1  # the summary, from rank 0 only

    resumed = _two_nodes(tmp_path, corpus, "ckpt_path=last", "trainer.max_steps=6")
    assert all(r.returncode == 0 for r in resumed), resumed[0].stdout[-3000:] + resumed[1].stdout[-3000:]
    assert list((tmp_path / "outputs" / "train").iterdir()) == [run]  # resumed where it was
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6 and json.loads((run / "result.json").read_text())["steps"] == 6
