"""Prepare data only: read, clean, train the tokenizer, encode into the token cache (see README.md).

`python prepare.py data=text data.path=~/corpus tokenizer.vocab_size=8192` builds the cache that
`python train.py` with the same data and tokenizer settings then reuses in seconds.
"""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from fragment_llm.config import register_configs, validate_data_config
from fragment_llm.data.pipeline import prepare_token_cache
from fragment_llm.errors import FragmentLLMError
from fragment_llm.training.rundir import register_run_dir_resolvers

register_configs()
register_run_dir_resolvers()  # prepare.yaml composes train.yaml, hence conf/hydra/default.yaml


@hydra.main(version_base="1.3", config_path="conf", config_name="prepare")
def main(cfg: DictConfig) -> None:
    try:
        validate_data_config(cfg.data, cfg.tokenizer)
        cache = prepare_token_cache(
            OmegaConf.to_container(cfg.data, resolve=True), OmegaConf.to_container(cfg.tokenizer, resolve=True)
        )
    except FragmentLLMError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    tokens = cache.meta["tokens"]
    print(f"Token cache: {cache.directory}")
    print(f"  {tokens['train']:,} train / {tokens['val']:,} val tokens, vocabulary {cache.meta['vocab_size']:,}")
    print(f"  report: {cache.directory / 'prepare_report.json'}")


if __name__ == "__main__":
    main()
