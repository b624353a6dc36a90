"""LightningDataModule: preprocessing, tokenization and batching for training."""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Sampler

from fragment_llm.checkpoint_file import check_count, check_mapping
from fragment_llm.data.dataset import TokenCache
from fragment_llm.data.pipeline import prepare_token_cache
from fragment_llm.data.tokenizer import Tokenizer, load_tokenizer
from fragment_llm.data.train_window_order import ResumableRandomSampler
from fragment_llm.data.windows import TokenWindows

log = logging.getLogger(__name__)

CUDA_LOADER_WORKERS = 2  # data.num_workers=null on a GPU: enough to stay ahead of any step


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
        # Under DDP one process builds the cache and the others wait for it: global rank 0 when data.cache_dir
        # is shared by all nodes, each node's first process with data.cache_per_node (node-local disks).
        if self.data_cfg.get("cache_per_node"):
            rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
        else:
            rank = rank_zero_only.rank  # the global rank, as Lightning reads it from the launcher
        return prepare_token_cache(self.data_cfg, self.tokenizer_cfg, build=rank == 0)

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
        sampler: Sampler[int] = self._train_sampler()
        if self.trainer is not None and self.trainer.world_size > 1:
            # Deal the one stream out in order (index i to rank i % world_size): the processes' batches together
            # are the batch one process would draw. (Lightning's own wrapper would permute each pass.)
            world, rank = self.trainer.world_size, self.trainer.global_rank
            sampler = DistributedSamplerWrapper(sampler, num_replicas=world, rank=rank, shuffle=False)
        return self._loader(self.train_set, sampler=sampler, drop_last=True)

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
        """Saved in every checkpoint: the sampler's seed and, for the record (an exported model's card),
        the windows trained on and what the corpus was."""
        state: dict[str, Any] = {}
        if self.cache is not None:
            meta = self.cache.meta
            state["corpus"] = {
                "tokens": meta["tokens"],
                "documents": meta["documents"],
                "files": len(meta["sources"]),
                "bytes": sum(s["size"] for s in meta["sources"]),
            }
        sampler = getattr(self, "_sampler", None)
        if sampler is not None:
            state["sampler"] = {"seed": sampler.seed, "samples_consumed": sampler.position()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._sampler_resume = dict(check_state(state_dict).get("sampler") or {})

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, batch_size=self.data_cfg.get("eval_batch_size"), shuffle=False)

    def _loader(self, dataset: TokenWindows, batch_size: int | None = None, **kwargs: Any) -> DataLoader:
        # On a GPU, batches come from page-locked memory (the copy to the device then runs without stalling
        # the host) and are prepared ahead in worker processes. On a CPU, slicing windows from a memmap
        # takes microseconds: workers would only add start-up time.
        on_cuda = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        workers = self.data_cfg.get("num_workers")
        if workers is None:
            workers = CUDA_LOADER_WORKERS if on_cuda else 0
        return DataLoader(
            dataset,
            batch_size=batch_size or self.data_cfg["batch_size"],
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=on_cuda,
            **kwargs,
        )


def check_state(state: Any) -> dict[str, Any]:
    """The datamodule's state from a checkpoint (see `TextDataModule.state_dict`), checked as data: a crafted
    seed or position would otherwise fail deep inside numpy at the first batch."""
    name = TextDataModule.__qualname__  # the key Lightning stores it under
    check_mapping(name, state)
    if (sampler := state.get("sampler")) is not None:
        check_mapping(f"{name}.sampler", sampler)
        check_count(f"{name}.sampler.seed", sampler.get("seed"), 2**64 - 1)  # torch.initial_seed()'s range
        check_count(f"{name}.sampler.samples_consumed", sampler.get("samples_consumed"))
    if (corpus := state.get("corpus")) is not None:  # for the record (the model card)
        check_mapping(f"{name}.corpus", corpus)
    return state
