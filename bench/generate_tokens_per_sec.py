"""Generation speed with and without the KV cache: tokens/s for N new tokens after a P-token prompt.

    python bench/generate_tokens_per_sec.py [--new 500] [--prompt 100] [--repeats 3] [--threads N]

Models are randomly initialized (speed does not depend on the weights' values) in two shapes:
nanoGPT's shakespeare_char (6 layers, 6 heads, 384 wide, block 256, vocab 65) and this project's
default model (conf/model/default.yaml, BPE vocabulary 2048). Both paths run the same decoding
loop (`fragment_llm.inference.engine.generate_tokens`, sampling included) with the default
context policy: past block_size the window slides forward by a quarter of the context.
Timings are the best of --repeats runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fragment_llm.config import SamplingConfig  # noqa: E402
from fragment_llm.inference.engine import generate_tokens  # noqa: E402
from fragment_llm.model.gpt import GPT, GPTConfig  # noqa: E402

SHAPES = {
    "shakespeare_char (6x6x384, block 256, vocab 65)": dict(
        n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, bias=False
    ),
    "default (conf/model/default.yaml, vocab 2048)": {
        **{
            k: v
            for k, v in OmegaConf.load(REPO / "conf" / "model" / "default.yaml").items()
            if k in {f.name for f in dataclasses.fields(GPTConfig)}  # the shape, not training-only keys
        },
        "vocab_size": 2048,
    },
}


def tokens_per_second(model: GPT, prompt: list[int], settings: SamplingConfig, repeats: int) -> float:
    best = float("inf")
    for r in range(repeats):
        generator = torch.Generator().manual_seed(r)
        start = time.perf_counter()
        n = sum(1 for _ in generate_tokens(model, prompt, settings, 1, generator))
        best = min(best, time.perf_counter() - start)
        assert n == settings.max_new_tokens
    return settings.max_new_tokens / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new", type=int, default=500, help="new tokens per generation")
    parser.add_argument("--prompt", type=int, default=100, help="prompt length in tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slide-tokens", type=int, default=None, help="context slide (default: block_size // 4)")
    parser.add_argument("--only", default=None, help="run only the shapes whose name contains this")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; {args.prompt}-token prompt, "
        f"{args.new} new tokens, best of {args.repeats}"
    )
    for name, shape in SHAPES.items():
        if args.only and args.only not in name:
            continue
        torch.manual_seed(0)
        model = GPT(GPTConfig(**shape)).eval()
        prompt = torch.randint(0, shape["vocab_size"], (args.prompt,)).tolist()
        print(f"\n{name}: {model.num_params() / 1e6:.2f}M parameters")
        for label, sampling in (("greedy", dict(temperature=0.0)), ("sampled", dict(temperature=0.8, top_k=200))):
            rates = {}
            for cached in (True, False):
                settings = SamplingConfig(
                    max_new_tokens=args.new,
                    stop_at_eot=False,
                    use_kv_cache=cached,
                    slide_tokens=args.slide_tokens,
                    **sampling,
                )
                rates[cached] = tokens_per_second(model, prompt, settings, args.repeats)
            print(
                f"  {label:8s} KV cache {rates[True]:8.1f} tok/s   no cache {rates[False]:8.1f} tok/s   "
                f"speed-up {rates[True] / rates[False]:5.1f}x"
            )


if __name__ == "__main__":
    main()
