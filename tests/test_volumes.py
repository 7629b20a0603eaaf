"""One volume protocol (ctvlp.data.volumes.VolumeSource), the cache-backed and the in-memory volume."""

from __future__ import annotations

import numpy as np
import pytest

from ctvlp.data.cache import CachedVolume, write_cached_volume
from ctvlp.data.preprocess import PreprocessedVolume
from ctvlp.data.sampling import SamplerConfig, window_sample
from ctvlp.data.volumes import MemoryVolume, VolumeSource, ZWindow, spacing_of

AFFINE_ZYX = np.array([[0, 0, 1.5, -90], [0, 1.5, 0, -60], [3.0000000001, 0, 0, 100], [0, 0, 0, 1]])


def _volume(shape=(9, 7, 13), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(-1024, 2000, shape).astype(np.int16)  # (Z, Y, X)
    masks = {"body": image > -500, "liver": np.zeros(shape, bool)}
    masks["liver"][3:6, 2:5, 4:11] = True
    return image, masks


def test_memory_volume_reads_as_the_same_volume_in_a_cache(tmp_path):
    image, masks = _volume()
    cached = CachedVolume(write_cached_volume(tmp_path, "a", image, AFFINE_ZYX, masks))
    memory = MemoryVolume.from_prepared(PreprocessedVolume(image, AFFINE_ZYX, masks), vid="a")
    for volume in (cached, memory, ZWindow(memory, 2, 7)):
        assert isinstance(volume, VolumeSource)
    assert memory.shape == cached.shape and memory.mask_names == cached.mask_names
    np.testing.assert_array_equal(memory.spacing_zyx, cached.spacing_zyx)  # rounded as meta.json stores it
    np.testing.assert_array_equal(spacing_of(AFFINE_ZYX), [3.0, 1.5, 1.5])
    slab = memory.slab(2, 5)
    assert slab.dtype == np.int16 and not np.shares_memory(slab, image)  # a copy, as the cache's
    np.testing.assert_array_equal(slab, cached.slab(2, 5))
    np.testing.assert_array_equal(memory.mask_slab(1, 8, ["liver", "body"]), cached.mask_slab(1, 8, ["liver", "body"]))
    for volume in (cached, memory):
        with pytest.raises(KeyError, match=r"a has no mask\(s\) \['lung'\]"):
            volume.mask_slab(0, 1, ["lung"])
    sampler = SamplerConfig(mode="chunk", chunk_depth=6, include_masks=True, text="report")
    a, b = (window_sample(v, sampler, 1, 5, (-1000.0, 1000.0)) for v in (cached, memory))
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]) if isinstance(a[key], np.ndarray) else a[key] == b[key], key


def test_a_z_window_reads_through_to_its_volume():
    image, masks = _volume()
    window = ZWindow(MemoryVolume("a", image, AFFINE_ZYX, masks), 2, 7)
    assert window.shape == (5, 7, 13) and window.z_extents == {} and window.organ_z_prior is False
    np.testing.assert_array_equal(window.slab(1, 3), image[3:5])
    np.testing.assert_array_equal(window.mask_slab(0, 5, ["liver"]), masks["liver"][None, 2:7])
