"""The torch path: `CTDataset`, length-bucketed batches, padding collate, seeded reproducible loading.

Reproducibility: a sample's randomness (chunk start, random crop) comes only from
``np.random.default_rng([seed, epoch, index])`` and the batch order only from ``(seed, epoch)``, so the
same seed and epoch give the same batches in the same order whatever ``num_workers`` is. Call
:func:`set_epoch` before each epoch (as with ``DistributedSampler``): it is the one way to move a loader
(evaluation's here, training's in ``ctvlp.train.data``) to an epoch; see its docstring for what it sets.
A batch sampler may yield :class:`SampleKey` tuples instead of indices, which carry the epoch to
persistent workers, the batch's position (for the collate's seeded text products) and the depth to pad
to (the batch's deepest member, so that a sample is padded once, by the sampler).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from collections.abc import Collection, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ctvlp.data.cache import BadVolume, Cache
from ctvlp.data.manifest import LABEL_PREFIX, label_names_of
from ctvlp.data.sampling import SamplerConfig, VolumeRecord, air_values, draw_sample, pad_depth
from ctvlp.errors import BadDatasetError


class SampleKey(NamedTuple):
    """What a batch sampler may hand the dataset for one sample instead of a bare index."""

    epoch: int
    """The epoch (persistent workers' copies of the dataset never see :func:`set_epoch`)."""
    index: int
    """The sample's row in the dataset."""
    batch: int = -1
    """Its batch's position in the epoch (over all processes; -1: not given), for seeded batch-level work."""
    depth: int = 0
    """Pad the sample to at least this many slices (its batch's deepest member; 0: its own depth)."""


class CTDataset(Dataset):
    """Samples from a cache (``ctvlp.data.cache.Cache`` or anything with ``index``, ``config`` and
    ``volume(vid)``), optionally restricted to one split and without the volumes ``exclude`` names."""

    def __init__(self, cache, sampler_config: SamplerConfig, split: str | None = None, seed: int = 0,
                 exclude: Collection[str] = ()):
        self.cache = cache
        self.config = sampler_config
        index = cache.index if split is None else cache.index[cache.index["split"] == split]
        if exclude:
            index = index[~index["id"].isin(list(exclude))]
        self.index = index.reset_index(drop=True)
        self.seed = seed
        self.epoch = 0
        self.label_names = label_names_of(self.index.columns)
        block = self.index[[LABEL_PREFIX + n for n in self.label_names]]
        self.label_mask = block.notna().to_numpy()  # (N, K)
        self.labels = block.astype("Float32").fillna(0).to_numpy(dtype=np.float32)  # (N, K)
        self.hu_window = tuple(cache.config.hu_window)

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def depths(self) -> np.ndarray:
        """(N,) depth of each sample (``whole`` mode: slices kept; ``chunk`` mode: ``chunk_depth``), at
        least the sampler's ``min_depth``."""
        least = self.config.min_depth or 1
        if self.config.mode == "chunk":
            return np.full(len(self), max(self.config.chunk_depth, least))
        if "num_slices" in self.index.columns:
            z = self.index["num_slices"].to_numpy(dtype=np.int64)
        else:
            z = np.array([self.cache.volume(v).shape[0] for v in self.index["id"]])
        return np.maximum(np.minimum(z, self.config.max_slices or z.max(initial=1)), least)

    def record(self, i: int) -> VolumeRecord:
        row = self.index.iloc[i]
        return VolumeRecord(volume=self.cache.volume(row["id"]), findings=str(row.get("findings", "")),
                            impressions=str(row.get("impressions", "")),
                            organ_sentences=json.loads(row.get("organ_sentences") or "{}"),
                            labels=self.labels[i], label_mask=self.label_mask[i])

    def __getitem__(self, key: int | tuple[int, ...]) -> dict:
        """Sample ``i`` of the current epoch, or of a :class:`SampleKey` (or a plain ``(epoch, i)``): a
        sampler that yields keys carries the epoch to persistent workers, whose copy of the dataset never
        sees :meth:`set_epoch`, and the depth of the sample's batch."""
        key = SampleKey(*key) if isinstance(key, tuple) else SampleKey(self.epoch, key)
        rng = np.random.default_rng([self.seed, int(key.epoch), int(key.index)])
        return draw_sample(self.record(int(key.index)), self.config, rng, self.hu_window, int(key.depth))


def require_split(cache: Cache, split: str) -> None:
    """A clear error when the cache has no volume in ``split``."""
    if not (cache.index["split"] == split).any():
        have = cache.index["split"].value_counts().to_dict()
        raise BadDatasetError(cache.root, f"split {split!r} is empty; the cache has {have}")


def listing(bad: Sequence[BadVolume], first: int = 3) -> str:
    """'file (reason), ...' of the first few bad volumes, and how many more."""
    shown = ", ".join(f"{b.file} ({b.reason})" for b in bad[:first])
    return shown + (f" and {len(bad) - first} more" if len(bad) > first else "")


def split_dataset(cache: Cache, cfg: SamplerConfig, split: str, seed: int) -> CTDataset:
    """A :class:`CTDataset` over one split of the cache, or a clear error if the split is empty or one of
    its cached volumes is missing or damaged (evaluation reads every volume of a split)."""
    require_split(cache, split)
    dataset = CTDataset(cache, cfg, split=split, seed=seed)
    bad = cache.bad_volumes(dataset.index["id"])
    if bad:
        raise BadDatasetError(cache.root, f"{len(bad)} cached volume(s) of split {split!r} are missing or damaged: "
                                          f"{listing(bad)}; evaluation needs every one: delete their folders and "
                                          f"rerun `ctvlp prepare`")
    return dataset


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of indices with similar depth, seeded by ``(seed, epoch)``.

    Indices are shuffled, stably sorted by depth (so ties break at random), cut into pools of
    ``pool_batches * batch_size`` neighbours, shuffled within each pool, cut into batches, and the
    batch order is shuffled. ``pool_batches=1`` pads least; larger pools vary batches more.
    ``bucket=False`` gives plain random batches (the reference the bucketing is measured against).
    ``exact_depth=True`` (evaluation) never puts samples of different depth in one batch, so no sample
    is padded by the collate and its input -- hence its embedding -- does not depend on which other
    volumes share its batch (repeat padding stretches a volume to the batch's depth).
    """

    def __init__(self, depths: np.ndarray, batch_size: int, seed: int = 0, pool_batches: int = 1,
                 bucket: bool = True, drop_last: bool = False, exact_depth: bool = False):
        if batch_size < 1 or pool_batches < 1:
            raise ValueError("batch_size and pool_batches must be positive")
        self.depths = np.asarray(depths)
        self.batch_size, self.seed, self.pool_batches = batch_size, seed, pool_batches
        self.bucket, self.drop_last, self.exact_depth = bucket, drop_last, exact_depth
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Yield ``epoch``'s batches from its batch ``start`` on (resume)."""
        self.epoch, self.start = epoch, start

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        order = rng.permutation(len(self.depths))  # (N,)
        if self.bucket:
            order = order[np.argsort(self.depths[order], kind="stable")]
            pool = self.pool_batches * self.batch_size
            order = np.concatenate([rng.permutation(order[s:s + pool]) for s in range(0, len(order), pool)]
                                   or [order])
        if self.exact_depth:
            runs = [order[self.depths[order] == d] for d in np.unique(self.depths)]  # (n_d,) each, order kept
            cuts = [run[s:s + self.batch_size].tolist() for run in runs for s in range(0, len(run), self.batch_size)]
        else:
            cuts = [order[s:s + self.batch_size].tolist() for s in range(0, len(order), self.batch_size)]
        if self.drop_last:
            cuts = [c for c in cuts if len(c) == self.batch_size]
        return [cuts[k] for k in rng.permutation(len(cuts))]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start:])

    def __len__(self) -> int:
        b = self.batch_size
        sizes = np.unique(self.depths, return_counts=True)[1] if self.exact_depth else [len(self.depths)]
        return int(sum(n // b if self.drop_last else -(-n // b) for n in sizes))


@dataclass
class Collate:
    """Stack samples into a batch, padding unpadded samples to the deepest one (``sampling.pad_depth``:
    repeat or air); samples drawn at their batch's depth (:class:`SampleKey`) are only stacked."""

    padding: str = "repeat"
    """``repeat`` or ``zero`` (air), as in :class:`SamplerConfig`."""
    air: tuple[float, ...] = (-1.0,)
    """Windowed value of air (-1000 HU) in each channel, used by ``zero`` padding (the body channel's
    "outside" is -1 too)."""

    @classmethod
    def for_dataset(cls, dataset: CTDataset) -> Collate:
        """The collate for ``dataset``'s padding mode, with air at the dataset's HU window."""
        return cls(dataset.config.padding, air_values(dataset.config, dataset.hu_window))

    def __call__(self, samples: list[dict]) -> dict:
        depth = max(s["image"].shape[1] for s in samples)
        samples = [pad_depth(s, depth, self.padding, self.air) for s in samples]
        batch = {k: torch.from_numpy(np.stack([s[k] for s in samples]))
                 for k in ("image", "slice_mask", "labels", "label_mask", "spacing")}  # image (B, 1, D, H, W)
        for key in ("id", "text", "findings", "sentences", "organs", "text_source", "z0", "z1"):
            batch[key] = [s[key] for s in samples]
        if "masks" in samples[0]:
            names = samples[0]["mask_names"]
            if any(s["mask_names"] != names for s in samples):
                raise ValueError("samples have different mask names; set SamplerConfig.mask_names")
            batch["masks"] = torch.from_numpy(np.stack([s["masks"] for s in samples]))  # (B, M, D, H, W)
            batch["mask_available"] = torch.from_numpy(np.stack([s["mask_available"] for s in samples]))
            batch["mask_names"] = names
        return batch


def padding_fraction(batches: list[list[int]], depths: np.ndarray) -> float:
    """Share of padded slices when each batch is padded to its deepest member."""
    padded = sum(len(b) * depths[b].max() for b in batches)
    return 1.0 - sum(depths[b].sum() for b in batches) / padded


def seed_worker(worker_id: int) -> None:
    """Seed numpy and random in a worker from torch's per-worker seed (differs per worker and epoch)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: CTDataset, batch_size: int, *, num_workers: int = 0, seed: int = 0,
                pool_batches: int = 1, bucket: bool = True, drop_last: bool = False,
                pin_memory: bool = False, exact_depth: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` with length-bucketed, seeded batches; call :func:`set_epoch`."""
    sampler = LengthBucketBatchSampler(dataset.depths(), batch_size, seed=seed, pool_batches=pool_batches,
                                       bucket=bucket, drop_last=drop_last, exact_depth=exact_depth)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=Collate.for_dataset(dataset),
                        worker_init_fn=seed_worker, generator=torch.Generator().manual_seed(seed),
                        pin_memory=pin_memory, persistent_workers=False)
    set_epoch(loader, 0)
    return loader


def set_epoch(loader: DataLoader, epoch: int, start: int = 0) -> None:
    """Move ``loader`` (:func:`make_loader`'s or ``ctvlp.train.data.train_loader``'s) to ``epoch``, from its
    batch ``start`` on (resume): the dataset's and the batch sampler's epoch, and the generator that seeds
    the workers, reseeded from ``(seed, epoch)``.

    What each reaches: the batch order is a function of (seed, epoch); a sample's content of (seed, epoch,
    index), through the dataset's epoch or, with persistent workers (training), the epoch in the sampler's
    :class:`SampleKey`. Workers started after this call (non-persistent ones: every epoch) seed numpy's
    and Python's global generators (:func:`seed_worker`) from the reseeded generator, so they too are a
    function of (seed, epoch); persistent workers keep the seeds they started with, which nothing of a
    sample reads. The generator is the loader's own, never torch's global one, so the training process's
    RNG (dropout) does not depend on how many epochs were started."""
    loader.dataset.set_epoch(epoch)
    loader.batch_sampler.set_epoch(epoch, start)
    loader.generator.manual_seed(int(np.random.default_rng([loader.batch_sampler.seed, epoch]).integers(2**62)))
