"""SamplerConfig.body_channel: the body mask as the last input channel (+1 inside, -1 outside)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from ctvlp.data.cache import CachedVolume, write_cached_volume
from ctvlp.data.loader import Collate, CTDataset
from ctvlp.data.preprocess import PreprocessConfig, preprocess
from ctvlp.data.sampling import SamplerConfig, VolumeRecord, draw_sample
from ctvlp.io.volume import Volume

pytestmark = pytest.mark.usefixtures("one_thread")

N = 28  # in-plane matrix of the phantom


def phantom(depth: int) -> Volume:
    """(X, Y, Z) HU at 1.5 x 1.5 x 3 mm, RAS: air, a body whose width grows with z and that holds an
    air-filled lung (a hole, filled in the body mask), and a separate table (a smaller component)."""
    x, y = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")  # (X, Y)
    hu = np.full((N, N, depth), -1000, np.int16)
    for z in range(depth):
        half = 5 + z % 4
        body = ((x - 13) / half) ** 2 + ((y - 12) / 6) ** 2 <= 1
        lung = ((x - 13) / 2.5) ** 2 + ((y - 12) / 2.5) ** 2 <= 1
        hu[..., z][body] = 40
        hu[..., z][lung] = -860
        hu[4:22, 21:23, z] = 80  # table, two voxels below the body
    return Volume(hu, np.diag([1.5, 1.5, 3.0, 1.0]))


class Hidden:
    """A cached volume that hides its ``body`` mask (the on-the-fly path)."""

    def __init__(self, volume: CachedVolume):
        self.inner = volume
        self.vid, self.shape, self.spacing_zyx = volume.vid, volume.shape, volume.spacing_zyx
        self.mask_names = [n for n in volume.mask_names if n != "body"]
        self.z_extents = {k: v for k, v in volume.z_extents.items() if k != "body"}

    def slab(self, z0, z1):
        return self.inner.slab(z0, z1)

    def mask_slab(self, z0, z1, names=None):
        return self.inner.mask_slab(z0, z1, self.mask_names if names is None else names)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Volumes made as `prepare` makes them (preprocess -> write_cached_volume), depths 4 and 9."""
    root = tmp_path_factory.mktemp("body_cache")
    config = PreprocessConfig(spacing=(1.5, 1.5, 3.0))
    for vid, depth in (("short", 4), ("long", 9)):
        out = preprocess(phantom(depth), {}, config)
        write_cached_volume(root, vid, out.image, out.affine_zyx, out.masks)
    return SimpleNamespace(index=pd.DataFrame({"id": ["short", "long"], "split": ["train", "train"]}),
                           config=config, volume=lambda vid: CachedVolume(root / "volumes" / vid))


def body_of(volume: CachedVolume) -> np.ndarray:
    return volume.mask_slab(0, volume.shape[0], ["body"])[0]  # (Z, Y, X)


def test_channels_count_the_body_channel():
    assert SamplerConfig(body_channel=True).channels == 2
    assert SamplerConfig(body_channel=True, windows=((-1000, 1000), (-1000, -500))).channels == 3
    assert SamplerConfig().channels == 1


def test_body_channel_is_the_cached_mask_after_the_windows(cache):
    volume = cache.volume("long")
    body = body_of(volume)
    assert body.any() and not body.all()
    lung = volume.slab(0, volume.shape[0]) == -860
    assert lung.any() and body[lung].all()  # the air-filled lung is a filled hole: inside the body
    record = VolumeRecord(volume=volume)
    windows = ((-1000, 1000), (-1000, -500))
    plain = draw_sample(record, SamplerConfig(mode="whole", windows=windows), np.random.default_rng(0))
    with_body = draw_sample(record, SamplerConfig(mode="whole", windows=windows, body_channel=True),
                            np.random.default_rng(0))
    assert with_body["image"].shape == (3, *volume.shape)
    np.testing.assert_array_equal(with_body["image"][:2], plain["image"])  # windows unchanged, first
    np.testing.assert_array_equal(with_body["image"][2], np.where(body, 1.0, -1.0))
    table = volume.slab(0, volume.shape[0]) == 80
    assert table.any() and (with_body["image"][2][table] == -1).all()  # the table is not body


def test_without_a_cached_mask_the_same_function_computes_it(cache):
    volume = cache.volume("long")
    sample = draw_sample(VolumeRecord(volume=Hidden(volume)), SamplerConfig(mode="whole", body_channel=True),
                         np.random.default_rng(0))
    np.testing.assert_array_equal(sample["image"][1], np.where(body_of(volume), 1.0, -1.0))


@pytest.mark.parametrize("padding", ["repeat", "zero"])
def test_chunk_padding_and_inplane_pad(cache, padding):
    """A 4-slice volume in an 8-slice chunk, padded in-plane to 40 x 40: repeat repeats the mask with
    its slice; zero padding and the in-plane border are air (-1) and outside the body (-1)."""
    volume = cache.volume("short")
    body = np.where(body_of(volume), 1.0, -1.0)  # (4, Y, X)
    y, x = volume.shape[1:]
    cfg = SamplerConfig(mode="chunk", chunk_depth=8, padding=padding, size=(40, 40), body_channel=True)
    image = draw_sample(VolumeRecord(volume=volume), cfg, np.random.default_rng(0))["image"]  # (2, 8, 40, 40)
    assert image.shape == (2, 8, 40, 40)
    v0, u0 = (40 - y) // 2, (40 - x) // 2
    inner = image[1, :, v0:v0 + y, u0:u0 + x]
    border = np.ones((40, 40), bool)
    border[v0:v0 + y, u0:u0 + x] = False
    assert (image[:, :, border] == -1).all()
    if padding == "repeat":
        np.testing.assert_array_equal(inner, body[np.arange(8) * 4 // 8])
    else:
        np.testing.assert_array_equal(inner[:4], body)
        assert (image[:, 4:] == -1).all()


@pytest.mark.parametrize("padding", ["repeat", "zero"])
def test_collate_pads_the_body_channel_like_the_image(cache, padding):
    ds = CTDataset(cache, SamplerConfig(mode="whole", padding=padding, body_channel=True))
    collate = Collate.for_dataset(ds)
    assert len(collate.air) == ds.config.channels
    batch = collate([ds[0], ds[1]])  # 4 and 9 slices
    assert batch["image"].shape[:3] == (2, 2, 9)
    short = torch.from_numpy(np.where(body_of(cache.volume("short")), 1.0, -1.0)).float()  # (4, Y, X)
    got = batch["image"][0, 1]
    if padding == "zero":
        assert torch.equal(got[:4], short) and (batch["image"][0, :, 4:] == -1).all()
    else:
        assert torch.equal(got, short[torch.arange(9) * 4 // 9])
