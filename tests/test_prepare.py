"""`prepare.py`: data preparation as its own stage, its cache reused by training, and bounded memory."""

import json
import textwrap

from omegaconf import OmegaConf

from fragment_llm.data.datamodule import TextDataModule
from fragment_llm.data.pipeline import prepare_token_cache
from tests.conftest import REPO_ROOT, compose_config, compose_train, corpus_text, run_python


def test_prepare_script_builds_the_cache_and_errors_are_one_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(50_000))
    args = [str(REPO_ROOT / "prepare.py"), "data=text", f"data.path={corpus}", "tokenizer.vocab_size=300"]
    proc = run_python(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    caches = list((tmp_path / "outputs" / ".data_cache").iterdir())
    assert len(caches) == 1 and f"Token cache: {caches[0]}" in proc.stdout
    assert (caches[0] / "prepare_report.json").is_file()
    assert "Prepared: 1 files found, 1 read" in proc.stdout + proc.stderr  # the summary in the log
    bad = run_python([str(REPO_ROOT / "prepare.py"), "data=text", f"data.path={tmp_path}/missing"], cwd=tmp_path)
    assert bad.returncode == 2 and "data.path" in bad.stderr and "Traceback" not in bad.stderr


def test_training_reuses_what_prepare_built(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(50_000))
    overrides = ["data=text", f"data.path={corpus}", "tokenizer.vocab_size=300", f"paths.root_dir={tmp_path}"]
    prep = compose_config("prepare", [*overrides, f"hydra.run.dir={tmp_path}/run"])
    assert prep.task_name == "prepare"
    built = prepare_token_cache(OmegaConf.to_container(prep.data, resolve=True), dict(prep.tokenizer))

    from fragment_llm.data import pipeline

    monkeypatch.setattr(pipeline._Builder, "build", lambda *a, **k: (_ for _ in ()).throw(AssertionError("rebuilt")))
    cfg = compose_train(tmp_path, overrides)
    dm = TextDataModule(
        data=OmegaConf.to_container(cfg.data, resolve=True),
        tokenizer=OmegaConf.to_container(cfg.tokenizer, resolve=True),
        block_size=32,
    )
    dm.prepare_data()
    assert dm.cache.directory == built.directory


MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from fragment_llm.data.pipeline import prepare_token_cache

    cache = prepare_token_cache(
        {"path": sys.argv[1], "cache_dir": sys.argv[2], "extensions": [".txt", ".jsonl"], "prepare_workers": 2},
        {"vocab_size": 300, "train_chars": 200000},
    )
    peak = {"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    print(json.dumps({**peak, "tokens": sum(cache.meta["tokens"].values())}))
    """
)


def _corpus(root, copies: int) -> float:
    """`copies` x (a 10 MB book, 10 MB of records); its size in MB."""
    root.mkdir()
    block = corpus_text(200_000)
    for c in range(copies):
        with open(root / f"book{c}.txt", "w") as f:
            for i in range(50):
                f.write(f"Chapter {i} of {c}\n\n{block}")
        with open(root / f"records{c}.jsonl", "w") as f:
            for i in range(5000):
                f.write(json.dumps({"text": f"Record {i} of {c}. " + block[(i * 997) % 150_000 :][:2000]}) + "\n")
    return sum(p.stat().st_size for p in root.iterdir()) / 1e6


def test_memory_does_not_grow_with_the_corpus(tmp_path):
    """Peak memory (main process and encoder processes) is the same for 20 MB and 60 MB of text."""
    peaks = []
    for copies in (1, 3):
        size = _corpus(tmp_path / f"c{copies}", copies)
        proc = run_python(["-c", MEMORY_PROBE, str(tmp_path / f"c{copies}"), str(tmp_path / "cache")], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "mb": size})
    small, big = peaks
    assert big["mb"] - small["mb"] > 40 and big["tokens"] > 2.9 * small["tokens"]
    assert big["main"] - small["main"] < 15, peaks
    assert big["worker"] - small["worker"] < 15, peaks
