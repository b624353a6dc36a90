"""Prompt validation: clean the text as training data was cleaned, bound its size, encode it.

Policy:
- `None` asks for unconditional generation: the context is just `<|endoftext|>`, the token
  that separates documents in training. An empty or blank prompt is refused.
- A tokenizer that puts ids before each document (an imported Llama's BOS, `doc_prefix_ids`)
  puts them before the prompt too, as training did and as transformers' pipelines do; with
  no prompt they are the whole context.
- Newlines are normalized and control characters other than `\\n` and `\\t` are removed,
  as preprocessing removed them from the training text (the model has never seen them);
  unpaired surrogates (undecodable input bytes) become U+FFFD.
- A prompt longer than `max_prompt_chars` characters or `max_prompt_tokens` tokens is refused.
- A prompt longer than the model's context is allowed with `overflow=slide`: generation
  starts from its last tokens (see `engine`), with a warning. With `overflow=stop` there
  would be no room to generate, so it is refused.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fragment_llm.data.cleaning import CleaningCounts, CleaningRules, clean_text
from fragment_llm.data.tokenizer import Tokenizer
from fragment_llm.errors import PromptError

log = logging.getLogger(__name__)

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_prompt(text: str, max_chars: int) -> str:
    """The prompt as the model should see it; refuses an empty or oversized one."""
    if len(text) > max_chars:
        raise PromptError(
            f"prompt is {len(text):,} characters; the limit is max_prompt_chars={max_chars:,}. "
            "Shorten the prompt (only its last tokens fit in the model's context anyway)."
        )
    counts = CleaningCounts()
    text = clean_text(text, CleaningRules(), counts)  # the same rules as the training text (NFC included)
    if counts.control_chars_removed:
        log.warning("prompt: removed %d control character(s)", counts.control_chars_removed)
    text = _SURROGATE.sub("\ufffd", text)
    if not text.strip():
        raise PromptError(
            "prompt is empty. Give prompt='some text', or leave prompt unset (null) for unconditional generation."
        )
    return text


def encode_prompt(
    tokenizer: Tokenizer, prompt: str | None, block_size: int, settings: Any, max_tokens: int
) -> list[int]:
    """Token ids of an already cleaned prompt; None gives the unconditional context."""
    prefix = list(getattr(tokenizer, "doc_prefix_ids", ()))
    if prompt is None:
        return prefix or [tokenizer.eot_id]
    ids = prefix + tokenizer.encode(prompt)
    if len(ids) > max_tokens:
        raise PromptError(
            f"prompt is {len(ids):,} tokens; the limit is max_prompt_tokens={max_tokens:,}. Shorten the prompt."
        )
    if len(ids) > block_size:
        if settings.overflow == "stop":
            raise PromptError(
                f"prompt is {len(ids)} tokens but the model's context (block_size) is {block_size}: with "
                "overflow=stop nothing could be generated. Shorten it, or use overflow=slide to continue "
                "from its last tokens."
            )
        log.warning(
            "prompt is %d tokens, longer than the model's context (%d): generation continues from its last tokens",
            len(ids),
            block_size,
        )
    return ids
