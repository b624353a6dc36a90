"""Interactive mode: type a prompt, watch the continuation stream in, change settings with commands.

Ctrl-C during a generation stops that generation and returns to the prompt; Ctrl-D or
/quit ends the session. One seeded random sequence runs through the whole session, so a
session is reproducible while asking the same prompt twice still gives two samples.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from fragment_llm.config import SamplingConfig
from fragment_llm.errors import FragmentLLMError
from fragment_llm.inference.api import LoadedModel, make_generator, sampling_config

HELP = """\
Type a prompt and press Enter; end a line with \\ to continue the prompt on the next line.
  /temperature X          (/temp)  0 is greedy decoding
  /top_k N                (/k)     0 disables top-k
  /top_p P                (/p)     1 disables nucleus sampling
  /max_new_tokens N       (/max)   length of each answer in tokens
  /repetition_penalty X   (/rep)   1 disables it
  /seed N                          restart the random sequence
  /settings                        show the current settings
  /help                            this text
  /quit                   (/exit)  leave (Ctrl-D does too)
Ctrl-C stops the current generation."""

# command -> (SamplingConfig field, parser of the argument)
SETTINGS: dict[str, tuple[str, Callable[[str], object]]] = {
    "temperature": ("temperature", float),
    "temp": ("temperature", float),
    "top_k": ("top_k", int),
    "k": ("top_k", int),
    "top_p": ("top_p", float),
    "p": ("top_p", float),
    "max_new_tokens": ("max_new_tokens", int),
    "max": ("max_new_tokens", int),
    "repetition_penalty": ("repetition_penalty", float),
    "rep": ("repetition_penalty", float),
}
SHOWN = ("temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty", "stop", "use_kv_cache")


class Repl:
    def __init__(
        self,
        lm: LoadedModel,
        settings: SamplingConfig,
        read_line: Callable[[str], str] = input,
        out: TextIO | None = None,
    ) -> None:
        self.lm = lm
        self.settings = settings
        self.read_line = read_line
        self.out = out or sys.stdout
        self.generator = make_generator(lm.device, settings.seed)

    def run(self, first_prompt: str | None = None) -> None:
        self.say(
            f"Fragment_LLM: {self.lm.checkpoint_path} (context {self.lm.block_size} tokens). /help lists commands."
        )
        if first_prompt is not None:
            self.answer(first_prompt)
        while True:
            try:
                line = self.read_prompt()
            except EOFError:
                self.say("")
                return
            except KeyboardInterrupt:
                self.say("\n(Ctrl-C stops a generation; /quit or Ctrl-D leaves)")
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
            elif line.strip():
                self.answer(line)

    def read_prompt(self) -> str:
        lines = [self.read_line(">>> ")]
        while lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1]
            lines.append(self.read_line("... "))
        return "\n".join(lines)

    def answer(self, prompt: str) -> None:
        """Stream the continuation of `prompt`; Ctrl-C ends it early, an error is one line."""
        try:
            generation, _ = self.lm.prepare(prompt, self.settings, generator=self.generator)
            for (piece,) in generation:
                self.out.write(piece)
                self.out.flush()
            self.say("")
        except KeyboardInterrupt:
            self.say("\n[stopped]")
        except FragmentLLMError as e:
            self.say(f"error: {e}")

    def command(self, line: str) -> bool:
        """Run a /command; False means the session should end."""
        name, _, arg = line[1:].strip().partition(" ")
        name, arg = name.lower(), arg.strip()
        if name in ("quit", "exit"):
            return False
        if name == "help":
            self.say(HELP)
        elif name == "settings":
            self.say("  ".join(f"{key}={getattr(self.settings, key)!r}" for key in SHOWN))
        elif name == "seed":
            try:
                self.generator.manual_seed(int(arg))
                self.say(f"seed = {int(arg)}")
            except ValueError:
                self.say(f"error: /seed needs a whole number, not {arg!r}")
        elif name in SETTINGS:
            key, parse = SETTINGS[name]
            try:  # FragmentLLMError is a ValueError too
                self.settings = sampling_config(self.settings, **{key: parse(arg)})
                self.say(f"{key} = {getattr(self.settings, key)!r}")
            except ValueError as e:
                self.say(f"error: /{name} {arg}: {e}")
        else:
            self.say(f"unknown command /{name}; /help lists the commands")
        return True

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
