"""Train a GPT on your text: `python train.py [group=choice] [key=value ...]` (see README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from fragment_llm.config import register_configs
from fragment_llm.errors import FragmentLLMError
from fragment_llm.training.run import train

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        result = train(cfg)
    except FragmentLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return result["best_val_loss"]  # the metric a sweeper minimizes


if __name__ == "__main__":
    main()
