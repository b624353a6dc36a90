"""Text the model writes from fixed prompts, logged to TensorBoard (TEXT tab) every few validations.

The text comes from the inference engine (`inference/engine.py`), the decoding loop `generate.py`
uses, so what TensorBoard shows is what the model will write when sampled later.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import FSDPStrategy

from fragment_llm.config import SamplingConfig
from fragment_llm.data.tokenizer import Tokenizer, tokenizer_from_json
from fragment_llm.errors import FragmentLLMError
from fragment_llm.inference.engine import generate_tokens

log = logging.getLogger(__name__)


class TextSamples(Callback):
    """Samples `max_new_tokens` after each prompt (None: unconditional) with a fixed seed.

    The same prompts and seed every time, so the samples show how one model's writing changes
    over training; the generator is private, so sampling never shifts the training RNG.
    """

    def __init__(
        self,
        prompts: list[str | None],
        every_n_validations: int = 1,
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int = 1337,
    ) -> None:
        self.prompts = list(prompts)
        self.every_n_validations = every_n_validations
        self.seed = seed
        # Always max_new_tokens, past an <|endoftext|> too: the samples of one run stay comparable.
        self.settings = SamplingConfig(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, stop_at_eot=False, seed=seed
        )
        self.validations = 0  # during fitting, counted across resumes
        self._encoded: list[tuple[str, list[int]]] = []
        self._tokenizer: Tokenizer | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._encoded = []
        if not pl_module.tokenizer_json:
            return
        if isinstance(trainer.strategy, FSDPStrategy):
            # Sharded weights: rank 0 alone cannot run the model, and all ranks generating in lockstep
            # would need the FSDP-wrapped root; samples are skipped rather than risk a hang.
            log.warning("callbacks.samples: no text samples under FSDP (the weights are sharded across ranks)")
            return
        self._tokenizer = tokenizer_from_json(pl_module.tokenizer_json)
        block_size = pl_module.model.config.block_size
        for prompt in self.prompts:
            try:
                ids = self._tokenizer.encode(prompt) if prompt else [self._tokenizer.eot_id]
            except FragmentLLMError as e:  # e.g. a character the character-level vocabulary lacks
                log.warning("callbacks.samples.prompts: skipping %r: %s", prompt, e)
                continue
            if len(ids) > block_size:
                log.warning("callbacks.samples.prompts: skipping %r: longer than model.block_size", prompt)
                continue
            self._encoded.append((prompt or "", ids))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every_n_validations or not trainer.is_global_zero:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not self._encoded:
            return
        for i, ((prompt, _), text) in enumerate(zip(self._encoded, self.generate(pl_module), strict=True)):
            shown = f"**prompt:** `{prompt}`" if prompt else "**unconditional**"
            body = "\n".join("    " + line for line in text.splitlines())  # indented: TensorBoard keeps it verbatim
            for logger in loggers:
                logger.experiment.add_text(f"samples/{i}", f"{shown}\n\n{body}", global_step=trainer.global_step)

    def generate(self, pl_module: pl.LightningModule) -> list[str]:
        """One text per prompt: the prompt and its continuation (an unconditional one without the <|endoftext|>)."""
        gpt, tokenizer = pl_module.model, self._tokenizer
        was_training = gpt.training
        gpt.eval()
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        texts = []
        for prompt, ids in self._encoded:
            steps = list(generate_tokens(gpt, ids, self.settings, generator=generator))  # each (1,)
            new = torch.cat(steps).tolist() if steps else []
            texts.append(tokenizer.decode((ids if prompt else []) + new))
        gpt.train(was_training)
        return texts

    def state_dict(self) -> dict[str, Any]:
        return {"validations": self.validations}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.validations = state_dict.get("validations", 0)
