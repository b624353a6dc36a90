"""Sample text from a trained model: `python generate.py [ckpt=...] [prompt="..."]` (see README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from fragment_llm.config import register_configs
from fragment_llm.errors import FragmentLLMError
from fragment_llm.inference import run_generate

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        for text in run_generate(cfg):
            print(text)
    except FragmentLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
