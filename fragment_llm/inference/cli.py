"""The `generate.py` job: check the settings, load the model, then print text or start the REPL.

stdout carries only generated text; logs (what was loaded, tokens/s) go to stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from tqdm import tqdm

from fragment_llm.errors import PromptError
from fragment_llm.inference.api import check_prompt_limits, load_model, sampling_config
from fragment_llm.inference.loading import (
    find_latest_checkpoint,
    resolve_checkpoint,
    resolve_device,
    resolve_precision,
)
from fragment_llm.inference.repl import Repl

log = logging.getLogger(__name__)
SAMPLE_SEPARATOR = "-" * 40


def run_generate(cfg: Any, out: TextIO | None = None) -> None:
    """Generate as `cfg` (the composed generate config) says, writing text to `out` (stdout)."""
    out = out or sys.stdout
    settings = sampling_config(cfg)  # bad values fail here, before anything is read
    if cfg.num_samples < 1:
        raise PromptError(f"num_samples={cfg.num_samples}: must be >= 1")
    check_prompt_limits(cfg.max_prompt_chars, cfg.max_prompt_tokens)
    resolve_precision(cfg.precision, resolve_device(cfg.device))
    if cfg.ckpt is None:
        path = find_latest_checkpoint(cfg.runs_dir)
        log.info("No ckpt given; using the newest run's checkpoint: %s", path)
    else:
        path = resolve_checkpoint(cfg.ckpt)
    lm = load_model(path, cfg.device, cfg.precision, cfg.max_prompt_chars, cfg.max_prompt_tokens)

    if cfg.interactive:
        if sys.stdin.isatty():
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:  # not on Windows
                pass
        Repl(lm, settings, out=out).run(first_prompt=cfg.prompt)
        return

    generation, prompt = lm.prepare(cfg.prompt, settings, cfg.num_samples)
    if settings.seed is None:
        seed = generation.generator.initial_seed()
        log.info("Random seed %d: pass seed=%d to reproduce this output", seed, seed)
    if cfg.stream and cfg.num_samples == 1:
        out.write(prompt or "")
        for (piece,) in generation:
            out.write(piece)
            out.flush()
        out.write("\n")
    else:  # samples are generated together and printed whole
        with tqdm(total=settings.max_new_tokens, desc="Generating", unit="step", disable=None, leave=False) as bar:
            for _ in generation:
                bar.update(1 if bar.n < bar.total else 0)  # the last item only flushes held-back text
        out.write(f"\n{SAMPLE_SEPARATOR}\n".join((prompt or "") + text for text in generation.texts) + "\n")
    out.flush()
    log.info(
        "Generated %d tokens in %.2f s (%.1f tokens/s, KV cache %s)",
        generation.tokens,
        generation.seconds,
        generation.tokens_per_second,
        "on" if settings.use_kv_cache else "off",
    )
