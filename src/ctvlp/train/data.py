"""Training batches from the cache: seeded, length-bucketed, tokenised in the workers, sharded over
processes, and resumable from any (epoch, batch) position."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from ctvlp.data.cache import Cache
from ctvlp.data.loader import Collate, CTDataset, LengthBucketBatchSampler, seed_worker
from ctvlp.errors import BadDatasetError
from ctvlp.train.config import DataConfig


class ShardedBatches(Sampler[list[tuple[int, int]]]):
    """The batches of ``inner`` for one process (``batches[rank::world]``, cut to the same count on every
    rank so no process waits for a missing batch), starting at ``start`` (to resume mid-epoch), as
    ``(epoch, index)`` keys."""

    def __init__(self, inner: LengthBucketBatchSampler, rank: int = 0, world: int = 1):
        self.inner, self.rank, self.world = inner, rank, world
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.start = start

    def _mine(self) -> list[list[int]]:
        batches = self.inner.batches()
        usable = len(batches) // self.world * self.world
        return batches[:usable][self.rank::self.world]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.inner.epoch  # (epoch, index) keys reach persistent workers (see CTDataset.__getitem__)
        return iter([[(epoch, i) for i in batch] for batch in self._mine()[self.start:]])

    def __len__(self) -> int:
        return len(self.inner) // self.world


@dataclass
class TokenizeCollate:
    """The padding collate plus tokenisation of each sample's text (done in the loader's workers)."""

    collate: Collate
    tokenizer: object
    max_length: int

    def __call__(self, samples: list[dict]) -> dict:
        batch = self.collate(samples)
        tokens = self.tokenizer(batch["text"], padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        batch["input_ids"], batch["attention_mask"] = tokens["input_ids"], tokens["attention_mask"]
        return batch


def split_dataset(cache: Cache, cfg, split: str, seed: int) -> CTDataset:
    """A :class:`CTDataset` over one split of the cache, or a clear error if the split is empty."""
    dataset = CTDataset(cache, cfg, split=split, seed=seed)
    if len(dataset) == 0:
        have = cache.index["split"].value_counts().to_dict()
        raise BadDatasetError(cache.root, f"split {split!r} is empty; the cache has {have}")
    return dataset


def train_loader(cache: Cache, cfg: DataConfig, tokenizer, seed: int, rank: int = 0,
                 world: int = 1) -> DataLoader:
    """The training DataLoader; its ``batch_sampler`` is a :class:`ShardedBatches` (call ``set_epoch``).
    With a ``tokenizer`` the workers also tokenise each sample's text (``input_ids``, ``attention_mask``)."""
    dataset = split_dataset(cache, cfg.sampler, cfg.train_split, seed)
    inner = LengthBucketBatchSampler(dataset.depths(), cfg.batch_size, seed=seed, pool_batches=cfg.pool_batches,
                                     drop_last=True)
    if len(inner) < world:
        raise BadDatasetError(cache.root, f"split {cfg.train_split!r} has {len(dataset)} volumes: fewer than one "
                                          f"batch of {cfg.batch_size} per process ({world} process(es))")
    collate = Collate.for_dataset(dataset)
    if tokenizer is not None:
        collate = TokenizeCollate(collate, tokenizer, cfg.max_text_tokens)
    return DataLoader(dataset, batch_sampler=ShardedBatches(inner, rank, world), num_workers=cfg.num_workers,
                      collate_fn=collate,
                      worker_init_fn=seed_worker, persistent_workers=cfg.num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))  # worker seeds: never the global RNG


def set_epoch(loader: DataLoader, epoch: int, start: int = 0) -> None:
    """Move the loader to ``epoch``, skipping its first ``start`` batches (resume)."""
    loader.dataset.set_epoch(epoch)
    loader.batch_sampler.set_epoch(epoch, start)
