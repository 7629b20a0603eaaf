"""CTDataset / make_loader on real caches: determinism across workers, collate, length bucketing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ctvlp.cli import main as cli_main
from ctvlp.data.cache import Cache, write_cached_volume
from ctvlp.data.loader import (Collate, CTDataset, LengthBucketBatchSampler, make_loader, padding_fraction,
                               set_epoch)
from ctvlp.data.manifest import Manifest
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig

Y, X = 12, 10


def build_cache(root: Path, depths: list[int]) -> Cache:
    """A cache written with write_cached_volume: volume k has HU 100 * k + z at slice z; a lung mask
    on slices [2, 6) and a heart mask on [Z - 3, Z)."""
    config = PreprocessConfig()
    root.mkdir(parents=True)
    (root / "preprocessing.json").write_text(json.dumps({"preprocess": config.to_dict()}))
    rows = []
    for k, z in enumerate(depths):
        vid = f"vol_{k}"
        image = (100 * k + np.arange(z, dtype=np.int16))[:, None, None] * np.ones((1, Y, X), np.int16)
        lung, heart = np.zeros((z, Y, X), bool), np.zeros((z, Y, X), bool)
        lung[2:6, 3:9, 2:8] = True
        heart[z - 3:, 4:8, 3:7] = True
        affine = np.diag([3.0, 1.5, 1.5, 1.0])
        write_cached_volume(root, vid, image, affine, {"lung": lung, "heart": heart})
        rows.append({"id": vid, "split": "train" if k % 4 else "valid", "path": f"/x/{vid}.nii.gz",
                     "impressions": f"Impression {k}.", "findings": f"Findings {k}.",
                     "organ_sentences": json.dumps({"lung": [f"Lung {k}."], "heart": [f"Heart {k}."]}),
                     "label:A": k % 2, "label:B": pd.NA if k % 3 == 0 else 1, "num_slices": z})
    index = Manifest(pd.DataFrame(rows).drop(columns="num_slices")).df
    index["num_slices"] = depths
    (root / "index").mkdir()
    index.to_parquet(root / "index" / "shard-0-of-1.parquet", index=False)
    return Cache(root)


@pytest.fixture
def cache(tmp_path) -> Cache:
    return build_cache(tmp_path / "cache", [5, 9, 40, 41, 12, 33, 7, 60])


def test_dataset_sample_from_real_cache(cache):
    ds = CTDataset(cache, SamplerConfig(chunk_depth=8, include_masks=True, mask_names=("lung", "heart")),
                   split="train", seed=1)
    assert len(ds) == 6 and ds.label_names == ["A", "B"]
    s = ds[0]  # vol_1: 9 slices
    assert s["id"] == "vol_1" and s["image"].shape == (1, 8, Y, X) and s["masks"].shape == (2, 8, Y, X)
    hu = np.rint((s["image"][0, :, 0, 0] + 1) * 1000 - 1000)
    assert hu.tolist() == [100 + z for z in range(s["z0"], s["z1"])]
    lung_slices = np.flatnonzero(s["masks"][0].any(axis=(1, 2))) + s["z0"]
    assert lung_slices.tolist() == [z for z in range(2, 6) if s["z0"] <= z < s["z1"]]
    assert s["labels"].tolist() == [1.0, 1.0] and s["label_mask"].tolist() == [True, True]
    assert ds[2]["label_mask"].tolist() == [True, False]  # vol_3: label B not available


def test_organ_sentences_follow_mask_extents(cache):
    ds = CTDataset(cache, SamplerConfig(chunk_depth=4), seed=0)
    k = ds.index.index[ds.index["id"] == "vol_7"][0]  # 60 slices: lung [2, 6), heart [57, 60)
    seen = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        s = ds[k]
        want = [o for o, (e0, e1) in (("lung", (2, 6)), ("heart", (57, 60))) if e0 < s["z1"] and e1 > s["z0"]]
        assert s["organs"] == want
        assert s["text"] == (" ".join(f"{o.capitalize()} 7." for o in want) if want else "Impression 7.")
        seen.add(s["text_source"])
    assert seen == {"organs", "impressions"}


def _batches(cache, workers: int, epoch: int, mode: str = "chunk") -> list[dict]:
    ds = CTDataset(cache, SamplerConfig(mode=mode, chunk_depth=8, random_crop=True, size=(8, 8)), seed=5)
    loader = make_loader(ds, batch_size=3, num_workers=workers, seed=5)
    set_epoch(loader, epoch)
    return list(loader)


@pytest.mark.parametrize("mode", ["chunk", "whole"])
def test_same_seed_and_epoch_same_batches_with_0_and_2_workers(cache, mode):
    a, b = _batches(cache, 0, 3, mode), _batches(cache, 2, 3, mode)
    assert [x["id"] for x in a] == [x["id"] for x in b]
    for x, y in zip(a, b):
        assert x["z0"] == y["z0"] and x["text"] == y["text"]
        torch.testing.assert_close(x["image"], y["image"], rtol=0, atol=0)
        assert torch.equal(x["slice_mask"], y["slice_mask"])


def test_epochs_differ(cache):
    a, b = _batches(cache, 0, 0), _batches(cache, 0, 1)
    assert [x["id"] for x in a] != [x["id"] for x in b] or [x["z0"] for x in a] != [x["z0"] for x in b]
    assert sorted(i for x in a for i in x["id"]) == sorted(cache.ids)  # every volume once per epoch


@pytest.mark.parametrize("padding, air_count", [("repeat", 0), ("zero", 1)])
def test_collate_whole_mode_pads_depth_to_batch_max(cache, padding, air_count):
    cfg = SamplerConfig(mode="whole", padding=padding, include_masks=True)
    ds = CTDataset(cache, cfg)
    batch = Collate(padding, (-1.0,))([ds[0], ds[1], ds[4]])  # 5, 9 and 12 slices
    assert batch["image"].shape == (3, 1, 12, Y, X) and batch["image"].dtype == torch.float32
    assert batch["masks"].shape == (3, 2, 12, Y, X) and batch["mask_names"] == ["lung", "heart"]
    assert batch["slice_mask"].sum(1).tolist() == [5, 9, 12]
    assert batch["labels"].shape == (3, 2) and batch["label_mask"].dtype == torch.bool
    assert len(batch["text"]) == 3 and batch["spacing"].shape == (3, 3)
    last = batch["image"][0, 0, -1, 0, 0].item()
    assert (last == -1.0) == bool(air_count)  # zero padding: windowed air; repeat: the last real slice
    if padding == "repeat":
        hu = torch.round((batch["image"][0, 0, :, 0, 0] + 1) * 1000 - 1000)
        assert hu.tolist() == [(z * 5) // 12 for z in range(12)]  # floor(arange(12) * 5 / 12)
        lung = batch["masks"][0, 0].flatten(1).any(1)
        assert lung.tolist() == [2 <= (z * 5) // 12 < 6 for z in range(12)]  # masks padded like the image


def test_zero_padding_fills_each_window_channel_with_its_own_air(cache):
    """Air (-1000 HU) is -1 in a window starting at -1000 but -1/3 in (-1500, 0): padding follows the
    channel's window, not a constant."""
    cfg = SamplerConfig(mode="whole", padding="zero", windows=((-1000, 1000), (-1500, 0)))
    ds = CTDataset(cache, cfg)
    batch = Collate.for_dataset(ds)([ds[0], ds[4]])  # 5 and 12 slices
    assert batch["image"].shape == (2, 2, 12, Y, X)
    pad = batch["image"][0, :, 5:]  # (C, 7, Y, X) padding slices of the 5-slice volume
    assert torch.allclose(pad[0], torch.tensor(-1.0)) and torch.allclose(pad[1], torch.tensor(-1 / 3))


def test_chunk_batches_have_fixed_depth(cache):
    loader = make_loader(CTDataset(cache, SamplerConfig(chunk_depth=16)), batch_size=4)
    for batch in loader:
        assert batch["image"].shape[1:] == (1, 16, Y, X)
        assert batch["slice_mask"].shape[1] == 16


def test_bucketing_cuts_padding_on_varied_depths(capsys):
    depths = np.random.default_rng(0).integers(40, 500, size=400)  # varied chest CT depths
    bucketed = LengthBucketBatchSampler(depths, 8, seed=0).batches()
    pooled = LengthBucketBatchSampler(depths, 8, seed=0, pool_batches=4).batches()
    random_ = LengthBucketBatchSampler(depths, 8, seed=0, bucket=False).batches()
    for b in (bucketed, pooled, random_):
        assert sorted(i for batch in b for i in batch) == list(range(400))
    fb, fp, fr = (padding_fraction(b, depths) for b in (bucketed, pooled, random_))
    with capsys.disabled():
        print(f"\npadding fraction, 400 depths in [40, 500), batch 8: bucketed {fb:.3f}, "
              f"pool of 4 batches {fp:.3f}, random {fr:.3f}")
    assert fb < 0.05 and fp < 0.15 and fr > 0.3 and fb < fr / 5


def test_exact_depth_batches_never_mix_depths():
    depths = np.array([10, 12, 10, 12, 12, 14, 10, 10, 10])
    s = LengthBucketBatchSampler(depths, 2, seed=0, exact_depth=True)
    batches = s.batches()
    assert sorted(i for b in batches for i in b) == list(range(9))
    assert all(len(set(depths[b])) == 1 for b in batches) and len(batches) == len(s) == 3 + 2 + 1
    assert padding_fraction(batches, depths) == 0
    assert len(LengthBucketBatchSampler(depths, 2, seed=0, exact_depth=True, drop_last=True).batches()) == 2 + 1


def test_bucket_sampler_is_seeded_and_shuffles_across_buckets():
    depths = np.arange(64)
    a = LengthBucketBatchSampler(depths, 4, seed=1).batches()
    assert a == LengthBucketBatchSampler(depths, 4, seed=1).batches()
    assert a != sorted(a)  # batch order shuffled
    s = LengthBucketBatchSampler(depths, 4, seed=1)
    s.set_epoch(1)
    assert s.batches() != a and len(s) == 16


def test_end_to_end_synth_prepare_loader(tmp_path):
    syn, man, out = tmp_path / "syn", tmp_path / "m.parquet", tmp_path / "cache"
    assert cli_main(["synth", "--out", str(syn), "--n", "4", "--matrix", "64"]) == 0
    assert cli_main(["manifest", "ctrate", str(syn), "--radgenome", str(syn / "radgenome"), "--out", str(man)]) == 0
    assert cli_main(["prepare", "--manifest", str(man), "--out", str(out)]) == 0
    cfg = SamplerConfig(chunk_depth=8, size=(32, 32), include_masks=True, mask_names=("lung", "heart"))
    loader = make_loader(CTDataset(Cache(out), cfg, seed=0), batch_size=2, seed=0)
    batches = list(loader)
    assert sum(len(b["id"]) for b in batches) == 4
    b = batches[0]
    assert b["image"].shape == (2, 1, 8, 32, 32) and b["labels"].shape == (2, 18)
    assert b["masks"].shape == (2, 2, 8, 32, 32)
    assert all(src in ("organs", "impressions", "report") for src in b["text_source"])
    assert any(b["text"]) and float(b["image"].min()) >= -1.0 and float(b["image"].max()) <= 1.0
