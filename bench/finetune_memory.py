"""Fine-tuning speed and peak memory on this machine: GPT-2 124M and SmolLM2-135M shapes, fp32 and bf16-mixed.

    python bench/finetune_memory.py [--steps 6] [--batch-size 4] [--block-size 256] [--threads N] [--only gpt2]

Each shape is written once as a Hugging Face model directory (random weights of the real shapes,
config.json + model.safetensors, through our exporter's mapping), then each (shape, precision)
runs in a fresh process, as `train.py init_from=<dir>` does it: the directory is checked and read
by interop/hf_dir.py, LitGPT trains with Lightning and AdamW on random token windows. Reported:
tokens/s over the steps after the first (which pays one-off costs), the resident memory once the
model is loaded, and the process's peak resident memory (ru_maxrss) by the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fragment_llm.interop.hf_config import to_hf_config  # noqa: E402
from fragment_llm.interop.hf_weights import to_hf  # noqa: E402
from fragment_llm.model.gpt import GPT, GPTConfig  # noqa: E402

SHAPES = {
    # openai-community/gpt2's config.json
    "gpt2-124M": ("gpt2", GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768,
                                    mlp="gelu_tanh")),
    # HuggingFaceTB/SmolLM2-135M's config.json
    "smollm2-135M": ("llama", GPTConfig(vocab_size=49152, block_size=8192, n_layer=30, n_head=9, n_embd=576,
                                        bias=False, position="rope", rope_base=100000.0, norm="rmsnorm",
                                        mlp="swiglu", mlp_hidden=1536, n_kv_head=3)),
}  # fmt: skip
PRECISIONS = ("32-true", "bf16-mixed")


def write_model_dir(family: str, config: GPTConfig, path: Path) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    model = GPT(config)
    ids = {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": None}
    (path / "config.json").write_text(json.dumps(to_hf_config(config, family, ids, "float32")))
    save_file(to_hf(model.state_dict(), config, family), str(path / "model.safetensors"))


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(model_dir: str, precision: str, steps: int, batch_size: int, block_size: int) -> dict:
    """One fine-tuning run in this process; its figures as a dict."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from fragment_llm.interop.hf_dir import HFModelDir
    from fragment_llm.training.init_from import load_pretrained_weights
    from fragment_llm.training.lit_module import LitGPT

    pretrained = HFModelDir.open(model_dir)
    config = pretrained.gpt_config(block_size)
    model_cfg = {f: getattr(config, f) for f in config.__dataclass_fields__}
    optimizer = dict(lr=3e-5, min_lr=3e-6, weight_decay=0.0, betas=[0.9, 0.95], warmup_steps=2, decay_steps=None)
    lit = LitGPT(model=model_cfg, optimizer=optimizer)
    load_pretrained_weights(lit.model, pretrained)
    loaded_rss = rss_mb()
    windows = torch.randint(0, config.vocab_size, (steps * batch_size, block_size + 1))
    data = DataLoader(TensorDataset(windows[:, :-1], windows[:, 1:]), batch_size=batch_size)
    times: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, *args) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args) -> None:
            times.append(time.perf_counter() - self.start)

    trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision=precision, max_steps=steps, logger=False, callbacks=[Clock()],
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        gradient_clip_val=1.0,
    )  # fmt: skip
    trainer.fit(lit, train_dataloaders=data)
    timed = times[1:] or times
    return {
        "params_M": lit.model.num_params(non_embedding=False) / 1e6,
        "tokens_per_s": batch_size * block_size * len(timed) / sum(timed),
        "first_step_s": times[0],
        "loaded_rss_mb": loaded_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bf16_support() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    have = [f for f in ("avx512_bf16", "amx_bf16") if f" {f}" in flags]
    return ", ".join(have) if have else "no avx512_bf16/amx_bf16 (bf16 matmuls are emulated)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--only", default=None, help="run only the shapes whose name contains this")
    parser.add_argument("--child", nargs=2, metavar=("MODEL_DIR", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.batch_size, args.block_size)))
        return
    print(f"{cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; bf16: {bf16_support()}")
    print(f"{args.steps} optimizer steps of {args.batch_size} x {args.block_size} tokens, AdamW, gradient clipping")
    print(f"{'shape':14s} {'precision':11s} {'params':>8s} {'tokens/s':>9s} {'loaded RSS':>11s} {'peak RSS':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (family, config) in SHAPES.items():
            if args.only and args.only not in name:
                continue
            model_dir = Path(tmp) / name
            write_model_dir(family, config, model_dir)
            for precision in PRECISIONS:
                cmd = [sys.executable, __file__, "--child", str(model_dir), precision, "--steps", str(args.steps),
                       "--batch-size", str(args.batch_size), "--block-size", str(args.block_size)]  # fmt: skip
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(f"{name:14s} {precision:11s} failed:\n{done.stderr[-2000:]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{name:14s} {precision:11s} {r['params_M']:7.1f}M {r['tokens_per_s']:9.0f} "
                      f"{r['loaded_rss_mb']:9.0f}MB {r['peak_rss_mb']:7.0f}MB")  # fmt: skip


if __name__ == "__main__":
    main()
