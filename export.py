"""Export a trained model for Hugging Face `transformers`: `python export.py ckpt=<run> out=<dir>` (see README.md)."""

import shlex
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fragment_llm.config import register_configs
from fragment_llm.errors import FragmentLLMError
from fragment_llm.inference.export import export_model

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    command = shlex.join(["python", "export.py", *HydraConfig.get().overrides.task])
    try:
        out = export_model(cfg.ckpt, cfg.out, cfg.dtype, cfg.overwrite, command)
    except FragmentLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(out)


if __name__ == "__main__":
    main()
