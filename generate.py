"""Sample text from a trained model: `python generate.py [ckpt=...] [prompt="..."]` (see README.md)."""

import os
import sys

import hydra
from omegaconf import DictConfig

from fragment_llm.config import register_configs
from fragment_llm.errors import FragmentLLMError
from fragment_llm.inference.cli import run_generate

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        run_generate(cfg)
    except FragmentLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C while printing one generation: stop quietly
        print(file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # the reader went away (`python generate.py ... | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
