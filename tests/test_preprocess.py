"""Preprocessing: window golden numbers, resampling against a plain reference, geometry in world mm."""

import numpy as np
import pytest
from scipy import ndimage

from ctvlp import load_volume
from ctvlp.data.preprocess import (PreprocessConfig, body_mask, gaussian_matrix, linear_matrix, preprocess,
                                   reorient_ras, resample, window)
from ctvlp.errors import BadVolumeError
from ctvlp.io.volume import Volume

BLOB = np.array([12.0, -20.0, 31.0])  # RAS mm


def test_window_golden_numbers():
    hu = np.array([-2000, -1000, -500, 0, 250, 1000, 3000], np.int16)
    np.testing.assert_allclose(window(hu), [-1, -1, -0.5, 0, 0.25, 1, 1], atol=1e-7)
    np.testing.assert_allclose(window(hu, -160, 240), [-1, -1, -1, -0.2, 1, 1, 1], atol=1e-6)
    assert window(hu).dtype == np.float32


def test_config_roundtrip_and_checks():
    config = PreprocessConfig(spacing=(1, 2, 3), crop_margin_mm=0)
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["spacing"] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        PreprocessConfig(spacing=(1, 0, 1))
    with pytest.raises(ValueError):
        PreprocessConfig(hu_window=(100, -100))


def _world_grid(shape, affine) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)  # (I, J, K, 3)
    return ijk @ affine[:3, :3].T + affine[:3, 3]  # (I, J, K, 3) RAS mm


def _phantom(affine: np.ndarray, shape) -> Volume:
    """Air, an elliptic body (40 HU) with a bright 6 mm ball (1000 HU) at BLOB, sampled in world mm."""
    xyz = _world_grid(shape, affine)
    hu = np.full(shape, -1000, np.int16)
    hu[(xyz[..., 0] / 70) ** 2 + (xyz[..., 1] / 55) ** 2 < 1] = 40
    hu[np.linalg.norm(xyz - BLOB, axis=-1) < 6] = 1000
    return Volume(hu, affine)


def _affine(columns, spacing, shape) -> np.ndarray:
    """Array axis a runs along world axis columns[a] (signed 1-based); centred on the origin."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for a, (c, s) in enumerate(zip(columns, spacing)):
        affine[abs(c) - 1, a] = np.sign(c) * s
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    return affine


ORIENTATIONS = {  # name: signed world axis (1=x, 2=y, 3=z) of array axes 0, 1, 2
    "RAS": (1, 2, 3), "LPS": (-1, -2, 3), "LAS": (-1, 2, 3), "transposed SLA": (3, -1, 2), "PIR": (-2, -3, 1)}


def _centroid_world(mask_zyx: np.ndarray, affine_zyx: np.ndarray) -> np.ndarray:
    zyx = np.argwhere(mask_zyx).mean(axis=0)
    return affine_zyx[:3, :3] @ zyx + affine_zyx[:3, 3]


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_blob_stays_at_its_world_point(name):
    spacing_by_world = {1: 0.9, 2: 1.1, 3: 2.5}
    cols = ORIENTATIONS[name]
    world_extent = {1: 180, 2: 150, 3: 100}
    spacing = [spacing_by_world[abs(c)] for c in cols]
    shape = tuple(int(world_extent[abs(c)] / s) for c, s in zip(cols, spacing))
    affine = _affine(cols, spacing, shape)
    vol = _phantom(affine, shape)
    out = preprocess(vol, {"ball": Volume((vol.array > 500).astype(np.uint8), affine)}, PreprocessConfig())
    a = out.affine_zyx
    assert np.all(np.diag(a[:3, :3][::-1]) > 0) and np.allclose(a[:3, :3][::-1], np.diag(np.diag(a[:3, :3][::-1])))
    np.testing.assert_allclose(np.linalg.norm(a[:3, :3], axis=0), [3.0, 1.5, 1.5])  # (z, y, x) mm
    np.testing.assert_allclose(_centroid_world(out.image > 500, a), BLOB, atol=0.75)
    np.testing.assert_allclose(_centroid_world(out.masks["ball"], a), BLOB, atol=0.75)
    # the crop keeps the body (+ margin) in x and y, and the full z extent (body in every slice)
    body_world = np.argwhere(out.masks["body"])[:, ::-1] * [1.5, 1.5, 3.0] + a[:3, 3]  # (N, 3) RAS
    np.testing.assert_allclose(body_world[:, 0].min(), -70, atol=1.6)
    np.testing.assert_allclose(body_world[:, 1].max(), 55, atol=1.6)
    assert out.image.shape[2] * 1.5 <= 140 + 2 * 5 + 2 * 1.5 + 1e-6  # cropped in x from 180 mm
    assert abs(out.image.shape[0] * 3.0 - 100) <= 3.0  # z field of view kept (the body fills it)


def test_reorient_is_exact():
    affine = _affine((-1, -2, 3), (1.0, 2.0, 3.0), (4, 5, 6))
    arr = np.arange(120, dtype=np.int16).reshape(4, 5, 6)
    out, new = reorient_ras(arr, affine)
    np.testing.assert_array_equal(out, arr[::-1, ::-1, :])
    world_old = _world_grid(arr.shape, affine)[::-1, ::-1, :]
    np.testing.assert_allclose(_world_grid(out.shape, new), world_old)


def test_resample_antialias_averages_what_sampling_aliases():
    """A 2 mm calcification on 0.5 mm voxels, resampled to 3 mm: point sampling may miss it or keep it
    at full height depending on where the grid falls; the prefiltered image keeps its mean HU (the
    integral over the volume) within 10 % wherever it sits, and a flat image stays flat."""
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    kept, plain = [], []
    for shift in range(6):
        arr = np.zeros((48, 48, 48), np.float32)
        arr[20 + shift:24 + shift, 20:24, 20:24] = 1000.0  # 2 mm cube
        out, _ = resample(arr, affine, (3.0, 3.0, 3.0), "trilinear", antialias=True)
        kept.append(out.sum() * 6 ** 3 / arr.sum())  # each output voxel holds 6 x 6 x 6 input voxels
        plain.append(resample(arr, affine, (3.0, 3.0, 3.0), "trilinear")[0].max())
    np.testing.assert_allclose(kept, 1.0, atol=0.1)
    assert max(plain) - min(plain) > 300  # without the prefilter, the result depends on the grid phase
    flat, _ = resample(np.full((20, 20, 20), -860.0, np.float32), affine, (3.0, 3.0, 3.0), "trilinear", True)
    np.testing.assert_allclose(flat, -860.0, atol=1e-3)


def test_antialiased_resampling_equals_gaussian_filter_then_interpolate():
    """The separable matrix path against the plain reference it replaces: scipy's gaussian_filter
    (mode nearest) on every input voxel, then torch's trilinear interpolate; shrinking and growing axes."""
    import torch

    rng = np.random.default_rng(1)
    arr = rng.integers(-1000, 1500, (37, 41, 23)).astype(np.int16)
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    spacing = (3.0, 1.9, 1.25)  # x, y shrink (sigma > 0), z grows (no filter along it)
    out, new = resample(arr, affine, spacing, "trilinear", antialias=True)
    scale = np.array([0.7, 0.8, 2.5]) / np.array(spacing)
    sigma = np.maximum(1 / scale - 1, 0) / 2
    filtered = ndimage.gaussian_filter(arr.astype(np.float32), sigma, mode="nearest")
    ref = torch.nn.functional.interpolate(torch.from_numpy(filtered)[None, None], scale_factor=tuple(scale),
                                          mode="trilinear", align_corners=False, recompute_scale_factor=False)[0, 0]
    assert out.shape == tuple(ref.shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref.numpy(), atol=0.02)  # HU; float32 rounding of 2,500-wide values
    np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), spacing)
    base = np.asfortranarray(arr.transpose(1, 0, 2)[::-1, :, ::-1])  # a file's layout...
    strided = base[::-1, :, ::-1].transpose(1, 0, 2)  # ...and the reoriented view of it: flipped, permuted
    assert np.array_equal(strided, arr) and not strided.flags.c_contiguous
    np.testing.assert_allclose(resample(strided, affine, spacing, "trilinear", antialias=True)[0], out, atol=1e-3)
    eye = np.eye(29)
    np.testing.assert_allclose(gaussian_matrix(29, 1.7), ndimage.gaussian_filter1d(eye, 1.7, axis=0, mode="nearest"),
                               atol=1e-12)
    grown = torch.nn.functional.interpolate(torch.from_numpy(eye)[None], scale_factor=1.7, mode="linear",
                                            align_corners=False, recompute_scale_factor=False)[0]  # (29, 49)
    np.testing.assert_allclose(linear_matrix(29, 1.7), grown.numpy().T, atol=1e-12)


def test_nearest_masks_equal_torch_interpolate():
    """Masks are read by index (:func:`nearest_indices`) instead of interpolated as floats: the same voxels
    as torch's 3-D nearest-exact interpolate, for shrinking, growing and tie-prone scales, on a flipped and
    permuted view too, and in the mask's own dtype."""
    import torch

    rng = np.random.default_rng(3)
    for shape, spacing in [((37, 41, 23), (3.0, 1.9, 1.25)), ((128, 128, 60), (3.0, 3.0, 6.0)),
                           ((50, 64, 117), (0.75, 1.5, 2.0)), ((9, 10, 11), (2.0, 2.0, 2.0))]:
        mask = rng.random(shape) > 0.6
        affine = np.diag([*rng.uniform(0.5, 1.0, 2), rng.choice([1.0, 1.25, 5.0]), 1.0])
        out, new = resample(mask, affine, spacing, "nearest-exact")
        scale = np.diag(affine)[:3] / np.array(spacing)
        ref = torch.nn.functional.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None],
                                              scale_factor=tuple(scale), mode="nearest-exact",
                                              recompute_scale_factor=False)[0, 0].numpy() > 0.5
        assert out.dtype == bool and out.shape == ref.shape
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), spacing)
        strided = np.asfortranarray(mask.transpose(1, 0, 2)[::-1])[::-1].transpose(1, 0, 2)
        assert np.array_equal(strided, mask) and not strided.flags.c_contiguous
        np.testing.assert_array_equal(resample(strided, affine, spacing, "nearest-exact")[0], ref)


def test_resample_matches_map_coordinates():
    rng = np.random.default_rng(0)
    arr = ndimage.gaussian_filter(rng.normal(size=(23, 17, 11)), 1.5).astype(np.float32) * 100
    affine = np.diag([0.7, 1.27, 2.0, 1.0])  # no exact nearest-neighbour ties
    affine[:3, 3] = [5, -3, 8]
    out, new = resample(arr, affine, (1.5, 1.0, 3.0), "trilinear")
    assert out.shape == (int(23 * 0.7 / 1.5), int(17 * 1.27), int(11 * 2 / 3))
    np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), [1.5, 1.0, 3.0])
    src = np.linalg.inv(affine) @ new  # output index -> input index
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), 0).reshape(3, -1)
    pos = src[:3, :3] @ ijk + src[:3, 3:]  # (3, N) input indices of the output voxel centres
    ref = ndimage.map_coordinates(arr, pos, order=1, mode="nearest").reshape(out.shape)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    mask = arr > 20
    near, near_affine = resample(mask, affine, (1.5, 1.0, 3.0), "nearest-exact")
    np.testing.assert_allclose(near_affine, new)
    idx = np.clip(np.floor(pos + 0.5).astype(int), 0, np.array(arr.shape)[:, None] - 1)
    np.testing.assert_array_equal(near > 0.5, mask[tuple(idx)].reshape(out.shape))


def test_body_mask_largest_component_and_filled_slices():
    hu = np.full((20, 20, 6), -1000, np.int16)
    hu[3:17, 3:17, :] = 40
    hu[6:14, 6:14, :] = -900  # lungs: a hole in every axial slice
    hu[0, 0:2, :] = 300  # a small separate object (the table)
    body = body_mask(hu)
    np.testing.assert_array_equal(body[3:17, 3:17, :], True)
    assert body.sum() == 14 * 14 * 6  # filled although the hole is open through z (3-D filling would not)
    hu[6:10, 3:6, :] = -900  # lungs open to the side in-plane: not a hole
    assert not body_mask(hu)[7, 4, 2]


def test_masks_must_share_the_grid_and_body_must_exist():
    affine = _affine((1, 2, 3), (1.5, 1.5, 3.0), (30, 30, 10))
    vol = _phantom(affine, (30, 30, 10))
    with pytest.raises(BadVolumeError, match="not on the grid"):
        preprocess(vol, {"m": Volume(np.zeros((30, 30, 9), np.uint8), np.eye(4))}, PreprocessConfig())
    with pytest.raises(BadVolumeError, match="no body"):
        preprocess(Volume(np.full((8, 8, 8), -1000, np.int16), affine), {}, PreprocessConfig())


def test_no_crop_keeps_the_field_of_view():
    affine = _affine((-1, -2, 3), (1.5, 1.5, 3.0), (140, 120, 12))
    vol = _phantom(affine, (140, 120, 12))
    out = preprocess(vol, {}, PreprocessConfig(crop_to_body=False))
    assert out.image.shape == (12, 120, 140)
    corner = out.affine_zyx @ [0, 0, 0, 1]
    np.testing.assert_allclose(corner[:3], vol.index_to_world([[139, 119, 0]])[0])


@pytest.fixture(scope="module")
def real_chest(real_dir):
    vol = load_volume(real_dir / "chest_ct_angio_1p5mm.nii.gz")
    aorta = load_volume(real_dir / "chest_ct_angio_1p5mm_aorta_mask.nii.gz", require_ct=False)
    return vol, aorta, preprocess(vol, {"aorta": aorta}, PreprocessConfig())


def test_real_chest_aorta_keeps_its_place_and_contrast(real_chest):
    vol, aorta, out = real_chest
    assert vol.orientation == "LPS"
    a = out.affine_zyx
    before = vol.index_to_world(np.argwhere(aorta.array > 0).mean(axis=0))[0]
    np.testing.assert_allclose(_centroid_world(out.masks["aorta"], a), before, atol=0.75)
    core = ndimage.binary_erosion(aorta.array > 0, iterations=2)  # away from the wall
    world = vol.index_to_world(np.argwhere(core))  # (N, 3) RAS mm inside the aorta
    zyx = np.rint((world - a[:3, 3]) @ np.linalg.inv(a[:3, :3]).T).astype(int)  # (N, 3) cache indices
    hu_before, hu_after = vol.array[core], out.image[tuple(zyx.T)]
    assert np.median(hu_after) > 150 and np.median(hu_before) > 150
    assert (hu_after > 150).mean() == pytest.approx((hu_before > 150).mean(), abs=0.03)  # ~83 % in both
    assert np.median(np.abs(hu_after.astype(int) - hu_before)) < 40


def test_real_chest_crop_contains_the_whole_body(real_chest):
    vol, _, out = real_chest
    body_before = body_mask(vol.array)
    world = vol.index_to_world(np.argwhere(body_before))  # (N, 3) RAS mm
    zyx = (world - out.affine_zyx[:3, 3]) @ np.linalg.inv(out.affine_zyx[:3, :3]).T
    shape = np.array(out.image.shape)
    assert zyx.min() >= -0.5 and np.all(zyx.max(axis=0) <= shape - 0.5)
    assert out.masks["body"].sum() * 1.5 * 1.5 * 3.0 == pytest.approx(body_before.sum() * 1.5 ** 3, rel=0.03)


def test_real_chest_aorta_z_extent(real_chest):
    vol, aorta, out = real_chest
    k = np.flatnonzero(aorta.array.any(axis=(0, 1)))  # LPS: array axis 2 is S
    z_world = vol.affine[2, 2] * np.array([k[0], k[-1]]) + vol.affine[2, 3]
    z = np.flatnonzero(out.masks["aorta"].any(axis=(1, 2)))
    z_cache = out.affine_zyx[2, 0] * np.array([z[0], z[-1]]) + out.affine_zyx[2, 3]
    np.testing.assert_allclose(z_cache, z_world, atol=1.5 + 1e-6)  # within half a 3 mm slice
