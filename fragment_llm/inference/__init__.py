"""Inference: load a checkpoint safely, then generate text from it, fast and streaming.

Modules: `loading` (checkpoint, device, precision), `kv_cache` (the cached forward),
`token_sampling` (next-token choice), `engine` (the decoding loop and context window),
`streaming` (ids to text: UTF-8 safe, stop strings), `prompt` (validation), `api`
(`load_model`, `LoadedModel`), `repl` (interactive mode), `cli` (`generate.py`).
"""

from fragment_llm.inference.api import LoadedModel, load_model, sampling_config
from fragment_llm.inference.loading import find_latest_checkpoint, resolve_checkpoint

__all__ = ["LoadedModel", "find_latest_checkpoint", "load_model", "resolve_checkpoint", "sampling_config"]
