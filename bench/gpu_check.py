"""The GPU check, in one go: GPT-2 small's speed (tokens/s, MFU, memory), with torch.compile, under FSDP,
and resuming each; for a session that has a GPU for a few minutes.

    python3 bench/gpu_check.py [--out DIR] [--steps 200] [--resume-steps 50] [--accumulate 4] [--budget 450]
    python bench/gpu_check.py --cpu-smoke   # the same stages, tiny, on the CPU: checks this script, not speed

Stages (each `train.py` in its own process, with its own time limit; a stage that fails or runs out of
time is reported with the end of its log, and the others still run):

    prepare          the token cache: the Python standard library's source (no download), GPT-2's vocabulary size
    eager            experiment=gpt2_small on 1 GPU, model.compile=false
    eager_resume     the same run continued for --resume-steps (resume=<run dir>)
    compile          the same with model.compile=true (the preset's setting)
    compile_resume
    fsdp             trainer=fsdp on every GPU there is (1 GPU still runs FSDP's code path)
    fsdp_resume

The summary table (tokens/s and MFU: medians of the logged windows after the first; memory: the peak
of torch's allocator) is printed last and written, with every stage's log tail, to --out (default:
$OUT if set, else a temporary folder): gpu_check.md, gpu_check.json, gpu_check_logs.txt. FSDP's
train/loss is compared with the eager run's, step by step (same seed, same data).

The GPU machine of this workplace has no network: the packages its Python lacks (hydra-core,
omegaconf, antlr4) travel as wheels in `.whl/` (see BENCHMARKS.md, "GPU check"), installed here
into a private folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MFU_TARGET = 0.45
LOSS_TOLERANCE = 1e-2  # FSDP vs eager, per logged step, over the first 100 steps
LOSS_STEPS = 100


def ensure_dependencies(work: Path) -> list[str]:
    """Extra import paths for the training processes: wheels from .whl/ when this Python lacks Hydra."""
    try:
        import hydra  # noqa: F401
        import omegaconf  # noqa: F401

        return []
    except ImportError:
        pass
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    if not wheels:
        sys.exit("hydra-core/omegaconf are missing and no wheels are in .whl/ (see BENCHMARKS.md, 'GPU check')")
    site = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target"]
    subprocess.run([*pip, str(site), *map(str, wheels)], check=True)
    sys.path.insert(0, str(site))
    print(f"installed {', '.join(w.name.split('-')[0] for w in wheels)} from .whl/ into {site}")
    return [str(site)]


def environment() -> dict:
    import lightning
    import torch

    from fragment_llm.training.peak_flops import gpu_label, peak_flops

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "lightning": lightning.__version__}
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        info |= {"gpu": name, "gpus": torch.cuda.device_count(), "bf16": torch.cuda.is_bf16_supported()}
        info |= {"table": gpu_label(name), "peak_bf16_tflops": (peak_flops(name, "bf16-mixed") or 0) / 1e12}
    return info


class Stages:
    def __init__(self, args: argparse.Namespace, work: Path, extra_paths: list[str]) -> None:
        self.args, self.work = args, work
        self.deadline = time.monotonic() + args.budget
        path = os.pathsep.join([str(REPO), *extra_paths, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self.env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}
        self.results: dict[str, dict] = {}
        self.logs: dict[str, str] = {}

    def common(self) -> list[str]:
        a, total = self.args, self.args.steps + self.args.resume_steps
        schedule = ["optimizer.warmup_steps=20", f"optimizer.decay_steps={total}"]  # so the loss moves
        if a.cpu_smoke:
            corpus = self.work / "corpus.txt"
            if not corpus.exists():
                from tests.conftest import synthetic_text

                corpus.write_text(synthetic_text(300_000))
            data = ["data=text", f"data.path={corpus}", "tokenizer=char", "model=tiny", "data.batch_size=8"]
            data.append("optimizer=adamw")  # what trainer=fsdp trains with, so every row uses the same optimizer
        else:
            data = ["experiment=gpt2_small", "data=stdlib", "tokenizer.vocab_size=50257", "tokens_per_step=null"]
        return [
            *data, *schedule, f"paths.root_dir={self.work}", f"trainer.accumulate_grad_batches={a.accumulate}",
            f"trainer.val_check_interval={a.steps}", "trainer.limit_val_batches=20",
            f"trainer.log_every_n_steps={2 if a.cpu_smoke else 10}",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "callbacks.samples=null",
        ]  # fmt: skip

    def devices(self, name: str) -> list[str]:
        if not name.startswith("fsdp"):
            return ["trainer=cpu"] if self.args.cpu_smoke else ["trainer=gpu"]
        fsdp = ["trainer=fsdp", f"trainer.devices={self.fsdp_processes()}"]
        if self.args.cpu_smoke:  # Lightning refuses FSDP without a GPU; tests/fsdp_cpu.py stands in
            fsdp += ["trainer.accelerator=cpu", "trainer.precision=32-true"]
        return fsdp

    def comparable(self) -> bool:
        """Whether FSDP's train/loss can be compared with eager's: the logged loss is rank 0's batch's."""
        return self.fsdp_processes() == 1

    def fsdp_processes(self) -> int:
        import torch

        return 2 if self.args.cpu_smoke else max(1, torch.cuda.device_count())  # every GPU there is

    def run(self, name: str, script: str, overrides: list[str], limit_s: float) -> dict:
        left = self.deadline - time.monotonic()
        if left < 30:
            return self._record(name, {"status": "skipped: out of time"})
        limit = min(limit_s, left)
        cmd = [sys.executable, str(REPO / script), *overrides]
        log = self.work / f"{name}.log"
        print(f"[{name}] {' '.join(cmd[1:])}  (limit {limit:.0f}s)", flush=True)
        start = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=self.work, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            try:
                rc = proc.wait(timeout=limit)
                status = "ok" if rc == 0 else f"failed (exit {rc})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # Lightning's child processes too
                proc.wait()
                status = f"failed: over its {limit:.0f}s limit"
        text = log.read_text(errors="replace")
        self.logs[name] = text[-4000:]
        if status == "ok" and "torch.compile failed" in text:
            status = "ok, but uncompiled (torch.compile failed)"
        return self._record(name, {"status": status, "seconds": round(time.monotonic() - start, 1)})

    def _record(self, name: str, result: dict) -> dict:
        print(f"[{name}] {result['status']}", flush=True)
        self.results[name] = result
        return result

    def train(self, name: str, extra: list[str], limit_s: float) -> None:
        run_dir = self.work / "runs" / name
        script = "tests/fsdp_cpu.py" if self.args.cpu_smoke and name.startswith("fsdp") else "train.py"
        overrides = [*self.common(), *self.devices(name), *extra, f"trainer.max_steps={self.args.steps}"]
        result = self.run(name, script, [*overrides, f"hydra.run.dir={run_dir}"], limit_s)
        result |= metrics(run_dir)
        _check_steps(result, self.args.steps)
        if not result["status"].startswith("ok"):
            self.results[f"{name}_resume"] = {"status": "skipped: nothing to resume"}
            return
        total = self.args.steps + self.args.resume_steps
        resumed = self.run(f"{name}_resume", script, [*self.devices(name), f"resume={run_dir}",
                                                     f"trainer.max_steps={total}"], limit_s)  # fmt: skip
        resumed |= metrics(run_dir, after=self.args.steps)
        _check_steps(resumed, total)


def _check_steps(result: dict, expected: int) -> None:
    if result["status"].startswith("ok") and result.get("steps") != expected:
        result["status"] = f"failed: ended at step {result.get('steps')}, not {expected}"


def metrics(run_dir: Path, after: int = -1) -> dict:
    """What the run logged after step `after`: tokens/s, MFU, peak memory, last loss and step."""
    if not (run_dir / "tensorboard").is_dir():
        return {}
    from tests.training_helpers import scalars

    out = {}
    result = run_dir / "result.json"
    if result.is_file():
        out["steps"] = json.loads(result.read_text()).get("steps")
    for tag, key in (("train/tokens_per_sec", "tokens_per_sec"), ("train/mfu", "mfu")):
        values = [v for s, v in sorted(scalars(run_dir, tag).items()) if s > after][1:]  # the first: warm-up
        if values:
            out[key] = statistics.median(values)
    memory = [v for s, v in scalars(run_dir, "train/max_memory_gb").items() if s > after]
    if memory:
        out["max_memory_gb"] = max(memory)
    loss = {s: v for s, v in scalars(run_dir, "train/loss").items() if s > after}
    if loss:
        out["loss"] = loss[max(loss)]
    return out


def loss_gap(work: Path, a: str, b: str) -> float | None:
    """The largest |train/loss difference| between two runs over their common logged steps < LOSS_STEPS."""
    from tests.training_helpers import scalars

    try:
        x, y = scalars(work / "runs" / a, "train/loss"), scalars(work / "runs" / b, "train/loss")
    except Exception:
        return None
    common = [s for s in x if s in y and s < LOSS_STEPS]
    return max(abs(x[s] - y[s]) for s in common) if common else None


def summary(env: dict, results: dict[str, dict], gap: float | None, cpu_smoke: bool) -> str:
    def cell(r: dict, key: str, fmt: str) -> str:
        return format(r[key], fmt) if r.get(key) is not None else "-"

    lines = [
        f"GPU check ({'CPU smoke run: figures say nothing about speed' if cpu_smoke else env.get('gpu', 'no GPU')}); "
        + ", ".join(f"{k} {v}" for k, v in env.items() if k != "gpu"),
        "",
        "| stage | status | wall s | steps | tokens/s | MFU | max memory GB | last train/loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['status']} | {cell(r, 'seconds', '.0f')} | {cell(r, 'steps', 'd')} | "
            f"{cell(r, 'tokens_per_sec', ',.0f')} | {cell(r, 'mfu', '.1%')} | {cell(r, 'max_memory_gb', '.1f')} | "
            f"{cell(r, 'loss', '.4f')} |"
        )
    mfu = results.get("compile", {}).get("mfu")
    lines.append(
        f"\nMFU target >= {MFU_TARGET:.0%} (compile stage, bf16, dense peak): "
        + ("not measured" if mfu is None else f"{mfu:.1%}, {'met' if mfu >= MFU_TARGET else 'missed'}")
    )
    lines.append(
        f"FSDP vs eager train/loss, largest gap over logged steps < {LOSS_STEPS} (target <= {LOSS_TOLERANCE}): "
        + (
            "not measured (compared when FSDP runs on one GPU)"
            if gap is None
            else f"{gap:.4f}, {'met' if gap <= LOSS_TOLERANCE else 'missed'}"
        )
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=os.environ.get("OUT"))
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (200; smoke: 10)")
    parser.add_argument("--resume-steps", type=int, default=None, help="steps added by each resume (50; smoke: 4)")
    parser.add_argument("--accumulate", type=int, default=None, help="batches per optimizer step (4; smoke: 1)")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all stages together (450)")
    parser.add_argument("--only", default=None, help="comma-separated stages: prepare,eager,compile,fsdp")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU: exercises the script")
    args = parser.parse_args()
    args.steps = args.steps or (10 if args.cpu_smoke else 200)
    args.resume_steps = args.resume_steps or (4 if args.cpu_smoke else 50)
    args.accumulate = args.accumulate or (1 if args.cpu_smoke else 4)
    args.budget = args.budget or (1800 if args.cpu_smoke else 450)
    only = set(args.only.split(",")) if args.only else {"prepare", "eager", "compile", "fsdp"}

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        out = Path(args.out) if args.out else work
        out.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(REPO))
        stages = Stages(args, work, ensure_dependencies(work))
        env = environment()
        print(json.dumps(env), flush=True)
        if "prepare" in only:
            stages.run("prepare", "prepare.py", stages.common(), 300)
        if "eager" in only:
            stages.train("eager", ["model.compile=false"], 150)
        if "compile" in only:
            stages.train("compile", ["model.compile=true"], 240)
        if "fsdp" in only:
            stages.train("fsdp", ["model.compile=false"], 150)
        gap = loss_gap(work, "eager", "fsdp") if stages.comparable() else None
        table = summary(env, stages.results, gap, args.cpu_smoke)
        (out / "gpu_check.md").write_text(table + "\n")
        (out / "gpu_check.json").write_text(json.dumps({"environment": env, "stages": stages.results,
                                                        "fsdp_vs_eager_loss_gap": gap}, indent=1))  # fmt: skip
        (out / "gpu_check_logs.txt").write_text("".join(f"===== {k}\n{v}\n" for k, v in stages.logs.items()))
        print("\n" + table)
        print(f"\nwritten to {out}" if args.out else "")


if __name__ == "__main__":
    main()
