"""From token ids to text as they arrive: UTF-8 safe decoding, stop strings, end-of-text.

Byte-level BPE may split one character over several tokens (every non-ASCII character of
a small vocabulary is 2-4 byte tokens); decoding such a prefix gives U+FFFD. The decoder
holds text back until it decodes cleanly, and the stop matcher holds back any tail that
could still become a stop string, so what has been printed never has to be taken back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from fragment_llm.data.tokenizer import Tokenizer
from fragment_llm.inference.engine import generate_tokens
from fragment_llm.model.gpt import GPT

REPLACEMENT = "\ufffd"  # what a decoder gives for an incomplete UTF-8 sequence


class IncrementalDecoder:
    """Decodes a growing list of ids; `push` returns only text that can no longer change.

    Each push decodes from `prefix` (the last emitted stretch, kept as context for
    decoders whose output depends on neighbours) and emits what lies beyond it. Text that
    ends in U+FFFD waits for the next token: it is either a split character, completed by
    the following bytes, or a genuine U+FFFD / invalid bytes, printed one token late.
    Nothing is ever printed that a later token could change.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # ids[prefix:read] were emitted last time
        self.read = 0  # ids[read:] are not emitted yet

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        seen = self.tokenizer.decode(self.ids[self.prefix : self.read])
        text = self.tokenizer.decode(self.ids[self.prefix :])
        if not final and text.endswith(REPLACEMENT):
            return ""  # maybe the first bytes of a character whose last bytes are still to come
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(seen) :]


class StopMatcher:
    """Cuts text at the first stop string; holds back a tail that may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if not self.stops:
            return text
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        hold = max(self._partial_match(s) for s in self.stops)
        out, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _partial_match(self, stop: str) -> int:
        """Length of the longest tail of `pending` that is a proper prefix of `stop`."""
        for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:k]):
                return k
        return 0


class SampleText:
    """One sample's text: tokens in, final text pieces out, until end-of-text or a stop string."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str], stop_at_eot: bool) -> None:
        self.decoder = IncrementalDecoder(tokenizer)
        self.matcher = StopMatcher(stops)
        self.eot_id = tokenizer.eot_id if stop_at_eot else None
        self.pieces: list[str] = []
        self.done = False

    def push(self, token_id: int) -> str:
        if self.done:
            return ""
        if token_id == self.eot_id:
            return self.finish()
        piece = self.matcher.push(self.decoder.push(token_id))
        if self.matcher.stopped:
            self.done = True
        self.pieces.append(piece)
        return piece

    def finish(self) -> str:
        """End the sample (idempotent) and return whatever text was still held back."""
        if self.done:
            return ""
        self.done = True
        piece = self.matcher.push(self.decoder.flush())
        piece += "" if self.matcher.stopped else self.matcher.flush()
        self.pieces.append(piece)
        return piece

    @property
    def text(self) -> str:
        return "".join(self.pieces)


class Generation:
    """One batched generation; iterate it (once) to run it. Each item is the new text of every sample.

    Afterwards `texts` holds each sample's continuation and `tokens`/`seconds` the work done.
    """

    def __init__(
        self,
        model: GPT,
        tokenizer: Tokenizer,
        prompt_ids: Sequence[int],
        settings: Any,
        num_samples: int,
        generator: torch.Generator,
    ) -> None:
        self.model, self.prompt_ids, self.settings = model, prompt_ids, settings
        self.num_samples, self.generator = num_samples, generator
        self.samples = [SampleText(tokenizer, settings.stop, settings.stop_at_eot) for _ in range(num_samples)]
        self.tokens = 0  # sampled tokens, all samples together
        self.seconds = 0.0
        self.started = False

    def __iter__(self) -> Iterator[list[str]]:
        if self.started:
            raise RuntimeError("a Generation runs once; prepare a new one to generate again")
        self.started = True
        start = time.perf_counter()
        try:
            steps = generate_tokens(self.model, self.prompt_ids, self.settings, self.num_samples, self.generator)
            for step in steps:
                self.tokens += self.num_samples
                yield [sample.push(token) for sample, token in zip(self.samples, step.tolist(), strict=True)]
                if all(sample.done for sample in self.samples):
                    break
            yield [sample.finish() for sample in self.samples]
        finally:
            self.seconds += time.perf_counter() - start

    @property
    def texts(self) -> list[str]:
        return [sample.text for sample in self.samples]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0
