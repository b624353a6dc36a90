"""LightningDataModule: preprocessing, tokenization and batching for training."""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from fragment_llm.data.dataset import TokenCache
from fragment_llm.data.pipeline import prepare_token_cache
from fragment_llm.data.sampler import ResumableRandomSampler
from fragment_llm.data.tokenizer import Tokenizer, load_tokenizer
from fragment_llm.data.windows import TokenWindows

log = logging.getLogger(__name__)


class TextDataModule(pl.LightningDataModule):
    """Turns raw text files into batches of (input, target) token windows.

    `prepare_data` builds (or finds) the token cache; `setup` opens it. Training draws
    random windows with replacement, one "epoch" being about one pass over the train
    tokens; validation uses a fixed, non-overlapping tiling of the val split, read in one fixed
    random order (so a limited validation scores a uniform sample of it).
    """

    def __init__(self, data: dict[str, Any], tokenizer: dict[str, Any], block_size: int) -> None:
        super().__init__()
        self.data_cfg = dict(data)
        self.tokenizer_cfg = dict(tokenizer)
        self.block_size = block_size
        self.cache: TokenCache | None = None
        self.tokenizer: Tokenizer | None = None
        self.train_set: TokenWindows | None = None
        self.val_set: TokenWindows | None = None

    def _cache(self) -> TokenCache:
        # Under DDP, only the first process of each node builds; the others wait for its cache.
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        return prepare_token_cache(self.data_cfg, self.tokenizer_cfg, build=local_rank == 0)

    def prepare_data(self) -> None:
        if self.cache is None:  # Lightning calls this again for each trainer.fit/validate
            self.cache = self._cache()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.cache = self.cache or self._cache()  # on other ranks prepare_data ran elsewhere
        self.tokenizer = load_tokenizer(self.cache.tokenizer_path)
        dtype = self.cache.meta["dtype"]
        self.train_set = TokenWindows(self.cache.shard_paths("train"), dtype, self.block_size, stride=1)
        val_paths = self.cache.shard_paths("val")
        self.val_set = TokenWindows(val_paths, dtype, self.block_size, stride=self.block_size, order_seed=0)

    @property
    def tokens_per_epoch(self) -> int:
        return self.cache.meta["tokens"]["train"] if self.cache else 0

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, sampler=self._train_sampler(), drop_last=True)

    def _train_sampler(self) -> ResumableRandomSampler:
        """Random window offsets, drawn with replacement; a pass is about one pass over the train tokens.

        The order follows from the seed (torch's, as `seed_everything` set it, or the one a resumed
        checkpoint recorded) and the number of windows trained on so far, which Lightning restores
        with its loop state when a run resumes.
        """
        batch_size = self.data_cfg["batch_size"]
        num_samples = max(batch_size, self.tokens_per_epoch // self.block_size)

        def samples_consumed() -> int:  # by all processes: DDP deals one sequence out to the ranks
            if self.trainer is None:
                return 0
            batches = self.trainer.fit_loop.epoch_loop.batch_progress.total.processed
            return batches * batch_size * self.trainer.world_size

        seed = (getattr(self, "_sampler_resume", None) or {}).get("seed", torch.initial_seed())
        self._sampler = ResumableRandomSampler(len(self.train_set), num_samples, seed, position=samples_consumed)
        return self._sampler

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the sampler's seed, and (for the record) the windows trained on."""
        sampler = getattr(self, "_sampler", None)
        if sampler is None:
            return {}
        return {"sampler": {"seed": sampler.seed, "samples_consumed": sampler.position()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._sampler_resume = dict(state_dict.get("sampler") or {})

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, batch_size=self.data_cfg.get("eval_batch_size"), shuffle=False)

    def _loader(self, dataset: TokenWindows, batch_size: int | None = None, **kwargs: Any) -> DataLoader:
        workers = self.data_cfg["num_workers"]
        return DataLoader(
            dataset,
            batch_size=batch_size or self.data_cfg["batch_size"],
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=False,
            **kwargs,
        )
