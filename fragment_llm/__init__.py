"""Fragment_LLM: train a small GPT on your own text, from raw files to a model you can talk to.

from fragment_llm import load_model
model = load_model("outputs/train/<run>")   # a run directory or a .ckpt file
print(model.generate("KING:", max_new_tokens=100))

`load_model` and `LoadedModel` are imported on first use: `import fragment_llm.<module>` loads no
torch (prepare.py and its encoder processes run without it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fragment_llm.inference import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fragment_llm import inference

        return getattr(inference, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
