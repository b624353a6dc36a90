"""User-facing errors: each message names the file or config key at fault and what to do.

Entry points catch `FragmentLLMError` and print its message instead of a traceback.
"""


class FragmentLLMError(ValueError):
    """Base class of every error caused by user input (config, data, checkpoint, prompt)."""


class ConfigError(FragmentLLMError):
    """A config value is invalid."""


class DataError(FragmentLLMError):
    """Input data cannot be used."""


class TokenizerError(FragmentLLMError):
    """A tokenizer cannot be built or loaded, or cannot encode the given text."""


class CheckpointError(FragmentLLMError):
    """A checkpoint cannot be found, trusted or loaded."""


class PromptError(FragmentLLMError):
    """A prompt or sampling setting is unusable."""


class TrainingError(FragmentLLMError):
    """Training cannot go on (e.g. the loss became NaN); the message says what was kept and what to try."""


class ExportError(FragmentLLMError):
    """A model cannot be written in another library's format (e.g. a switch no such architecture has)."""
