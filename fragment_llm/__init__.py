"""Fragment_LLM: train a small GPT on your own text, from raw files to a model you can talk to.

from fragment_llm import load_model
model = load_model("outputs/train/<run>")   # a run directory or a .ckpt file
print(model.generate("KING:", max_new_tokens=100))
"""

from fragment_llm.inference import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
__version__ = "0.1.0"
