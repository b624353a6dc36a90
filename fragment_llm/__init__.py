"""Fragment_LLM: train a small GPT on your own text, from raw files to a model you can talk to."""

from fragment_llm.inference import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]
__version__ = "0.1.0"
