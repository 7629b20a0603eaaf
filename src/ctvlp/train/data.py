"""Training batches from the cache: seeded, length-bucketed, sharded over processes, resumable from any
(epoch, batch) position, and complete: the loader's workers also make every text-derived tensor the
model and the objective read (``ctvlp.data.text.TextProducts``: tokens, sentences, opposite-sentence
pairs seeded by (seed, epoch, batch), label targets), so a step only moves tensors to the device.

Damaged cache: before step 1, :func:`drop_bad_samples` checks every training volume's files from their
headers and sizes (``Cache.bad_volumes``; the same answer on every process, so every rank leaves out
the same volumes and the batches stay a function of (seed, epoch, index)); up to
``DataConfig.max_bad_samples`` are left out and listed, more stop the run. A read that still fails
later (a file deleted during training) ends the run with an error naming the file, also when it happens
in a loader worker (:data:`READ_ERROR`). Evaluation splits (:func:`ctvlp.data.loader.split_dataset`) are refused instead:
a metric over part of a test split is not the number it claims to be.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

from ctvlp.data.cache import BadVolume, Cache
from ctvlp.data.loader import (Collate, CTDataset, LengthBucketBatchSampler, SampleKey, listing, require_split,
                               seed_worker)
from ctvlp.data.manifest import save_table
from ctvlp.data.text import MODEL_TEXT, TextProducts
from ctvlp.errors import BadDatasetError, CtvlpError
from ctvlp.train.config import DataConfig

BAD_SAMPLES = "bad_samples.csv"
"""OUT/bad_samples.csv: id, file, reason of the training volumes left out."""
READ_ERROR = "read_error"
"""Key of a batch that could not be read: ``{READ_ERROR: (file, reason)}`` (a worker's exception would reach
the training process as text only)."""
MODEL_INPUTS = ("image", "slice_mask", "masks", "mask_available", *MODEL_TEXT)
"""The batch tensors a training step hands the model (``VisionLanguageModel.forward``)."""

__all__ = ["MODEL_INPUTS", "READ_ERROR", "ShardedBatches", "TrainCollate", "TrainingSamples",
           "checked", "drop_bad_samples", "train_loader"]


class ShardedBatches(Sampler[list[SampleKey]]):
    """The batches of ``inner`` for one process (``batches[rank::world]``, cut to the same count on every
    rank so no process waits for a missing batch), starting at ``start`` (to resume mid-epoch), as
    :class:`~ctvlp.data.loader.SampleKey` s: the epoch, the sample, the batch's position in the epoch over
    all processes, and the batch's deepest member (each sample is drawn padded to it, once)."""

    def __init__(self, inner: LengthBucketBatchSampler, rank: int = 0, world: int = 1):
        self.inner, self.rank, self.world = inner, rank, world
        self.start = 0

    @property
    def seed(self) -> int:
        return self.inner.seed

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.inner.set_epoch(epoch)
        self.start = start

    def _mine(self) -> list[list[int]]:
        batches = self.inner.batches()
        usable = len(batches) // self.world * self.world
        return batches[:usable][self.rank::self.world]

    def __iter__(self) -> Iterator[list[SampleKey]]:
        epoch, depths = self.inner.epoch, self.inner.depths  # keys reach persistent workers (CTDataset.__getitem__)
        mine = list(enumerate(self._mine()))[self.start:]
        return iter([[SampleKey(epoch, i, self.rank + self.world * j, int(depths[batch].max())) for i in batch]
                     for j, batch in mine])

    def __len__(self) -> int:
        return len(self.inner) // self.world


class TrainingSamples(CTDataset):
    """The training split's samples; a sample that cannot be read comes back as ``{READ_ERROR: (file,
    reason)}`` instead of raising, so that the training process learns the file from any worker."""

    def __getitem__(self, key: int | tuple[int, ...]) -> dict:
        try:
            sample = super().__getitem__(key)
        except CtvlpError as err:
            return {READ_ERROR: (err.path, err.reason)}
        sample["key"] = SampleKey(*key) if isinstance(key, tuple) else SampleKey(self.epoch, key)
        return sample


@dataclass
class TrainCollate:
    """The stacking collate, then (``text``) every text-derived tensor of the batch, made in the loader's
    workers from the batch's (epoch, position); a batch with a sample that could not be read becomes
    ``{READ_ERROR: (file, reason)}``."""

    collate: Collate
    text: TextProducts | None = None

    def __call__(self, samples: list[dict]) -> dict:
        failed = [s[READ_ERROR] for s in samples if READ_ERROR in s]
        if failed:
            return {READ_ERROR: failed[0]}
        batch = self.collate(samples)
        if self.text is not None:
            key = samples[0]["key"]
            batch.update(self.text(batch, key.epoch, key.batch))
        return batch


def checked(batch: dict) -> dict:
    """``batch``, or the error naming the file one of its samples could not be read from."""
    if READ_ERROR in batch:
        raise BadDatasetError(*batch[READ_ERROR])
    return batch


def drop_bad_samples(cache: Cache, cfg: DataConfig, out: Path | None) -> list[BadVolume]:
    """The training split's missing or damaged volumes, to leave out; listed in ``out``/bad_samples.csv and
    on stderr (``out`` None: neither, as on every process but the first). More than ``cfg.max_bad_samples``:
    BadDatasetError naming them."""
    bad = cache.bad_volumes(cache.index.loc[cache.index["split"] == cfg.train_split, "id"])
    if out is not None:
        save_table(pd.DataFrame(bad, columns=list(BadVolume._fields)), out / BAD_SAMPLES)
    if len(bad) > cfg.max_bad_samples:
        raise BadDatasetError(cache.root, f"{len(bad)} cached training volume(s) are missing or damaged, more than "
                                          f"data.max_bad_samples={cfg.max_bad_samples}: {listing(bad)}; delete "
                                          f"their folders and rerun `ctvlp prepare`")
    if bad and out is not None:
        print(f"skipped {len(bad)} missing or damaged cached training volume(s) (data.max_bad_samples="
              f"{cfg.max_bad_samples}), listed in {out / BAD_SAMPLES}: {listing(bad, 1)}", file=sys.stderr)
    return bad


def train_loader(cache: Cache, cfg: DataConfig, text: TextProducts | None, seed: int, rank: int = 0,
                 world: int = 1, exclude: Collection[str] = ()) -> DataLoader:
    """The training DataLoader without the volumes ``exclude`` names; its ``batch_sampler`` is a
    :class:`ShardedBatches` (call :func:`ctvlp.data.loader.set_epoch`). With ``text`` the workers also make the batch's
    text-derived tensors (see ``ctvlp.data.text``). Pass its batches through :func:`checked`."""
    require_split(cache, cfg.train_split)
    dataset = TrainingSamples(cache, cfg.sampler, split=cfg.train_split, seed=seed, exclude=exclude)
    inner = LengthBucketBatchSampler(dataset.depths(), cfg.batch_size, seed=seed, pool_batches=cfg.pool_batches,
                                     drop_last=True)
    if len(inner) < world:
        raise BadDatasetError(cache.root, f"split {cfg.train_split!r} has {len(dataset)} volumes: fewer than one "
                                          f"batch of {cfg.batch_size} per process ({world} process(es))")
    collate = TrainCollate(Collate.for_dataset(dataset), text)
    return DataLoader(dataset, batch_sampler=ShardedBatches(inner, rank, world), num_workers=cfg.num_workers,
                      collate_fn=collate,
                      worker_init_fn=seed_worker, persistent_workers=cfg.num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))  # worker seeds: never the global RNG
