"""Geometry of `load_volume` checked in world coordinates on the real files and their variants.

For every variant (flips, axis permutations, dtype and scaling, container format) the HU value at
the same world points must be the same as in the original file.
"""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

import ctvlp

CT_FILES = ["chest_ct_angio_1p5mm.nii.gz", "abdomen_ct_3mm_30slices.nii.gz"]


def _world_points(volume, n=200, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ijk = np.stack([rng.integers(0, s, n) for s in volume.shape], axis=1)
    return volume.index_to_world(ijk)


def _hu_at(volume, xyz) -> np.ndarray:
    ijk = volume.world_to_index(xyz)
    assert np.abs(ijk - np.rint(ijk)).max() < 1e-3, "world points must fall on voxel centres"
    i, j, k = np.rint(ijk).astype(int).T
    return np.asarray(volume.array[i, j, k], dtype=np.float64)


def _flip_permute(array, affine, flips, perm):
    """Flip array axes and permute them, with the affine that keeps every voxel's world position."""
    data, aff = array, affine.copy()
    for axis in flips:
        data = np.flip(data, axis)
        aff[:3, 3] += aff[:3, axis] * (array.shape[axis] - 1)  # new index 0 is the old last voxel
        aff[:3, axis] *= -1
    data = np.transpose(data, perm)
    aff[:3, :3] = aff[:3, :3][:, list(perm)]
    return data, aff


@pytest.mark.parametrize("name", CT_FILES)
@pytest.mark.parametrize("flips, perm", [((), (0, 1, 2)), ((0,), (0, 1, 2)), ((1, 2), (0, 1, 2)),
                                         ((), (2, 0, 1)), ((0, 2), (1, 2, 0))])
def test_reoriented_variants_agree_in_world(real_dir, tmp_path, name, flips, perm):
    original = ctvlp.load_volume(real_dir / name)
    points = _world_points(original)
    data, affine = _flip_permute(original.array, original.affine, flips, perm)
    path = tmp_path / "variant.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    variant = ctvlp.load_volume(path)
    np.testing.assert_array_equal(_hu_at(variant, points), _hu_at(original, points))


@pytest.mark.parametrize("name", CT_FILES)
def test_dtype_and_scaling_variants_agree(real_dir, tmp_path, name):
    original = ctvlp.load_volume(real_dir / name)
    points = _world_points(original)
    expected = _hu_at(original, points)
    hu = original.array.astype(np.int32)
    scaled = nib.Nifti1Image(((hu + 1024) // 2).astype(np.uint16), original.affine)  # raw = (HU + 1024) / 2
    scaled.header.set_slope_inter(2.0, -1024.0)
    variants = {"scaled.nii": scaled, "f32.nii.gz": nib.Nifti1Image(hu.astype(np.float32), original.affine),
                "i32.nii.gz": nib.Nifti1Image(hu, original.affine)}
    for fname, img in variants.items():
        nib.save(img, tmp_path / fname)
        got = ctvlp.load_volume(tmp_path / fname)
        tol = 1 if fname == "scaled.nii" else 0  # odd HU lose one unit in (HU + 1024) // 2
        np.testing.assert_allclose(_hu_at(got, points), expected, atol=tol, err_msg=fname)
    assert ctvlp.load_volume(tmp_path / "i32.nii.gz").array.dtype == np.int16


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_agree_in_world(real_dir, tmp_path, suffix):
    original = ctvlp.load_volume(real_dir / "chest_ct_angio_1p5mm.nii.gz")  # LPS on disk
    image = sitk.ReadImage(str(real_dir / "chest_ct_angio_1p5mm.nii.gz"))  # ITK's own NIfTI reader
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    got = ctvlp.load_volume(tmp_path / f"v{suffix}")
    points = _world_points(original)
    np.testing.assert_array_equal(_hu_at(got, points), _hu_at(original, points))
    assert got.orientation == original.orientation


def test_dicom_series_matches_reference_geometry(real_dir):
    volume = ctvlp.load_volume(real_dir / "dicom_ct_series")
    reference = nib.load(real_dir / "dicom_ct_series_reference_geometry.nii.gz")
    assert volume.shape == reference.shape
    np.testing.assert_allclose(volume.spacing, [0.9765625, 0.9765625, 2.0], atol=1e-6)  # not SliceThickness 3
    ours = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(volume.shape, np.uint8), volume.affine))
    theirs = nib.as_closest_canonical(reference)
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-3)
    centres = lambda aff, shape: np.sort(  # noqa: E731 - world centres of the 8 corner voxels
        (np.array(np.meshgrid(*[[0, s - 1] for s in shape], indexing="ij")).reshape(3, -1).T
         @ aff[:3, :3].T + aff[:3, 3]).round(3), axis=0)
    np.testing.assert_allclose(centres(volume.affine, volume.shape),
                               centres(reference.affine, reference.shape), atol=1e-3)
    assert volume.array.min() == -1024 and volume.array.dtype == np.int16  # RescaleIntercept applied


def test_dicom_round_trip_through_nifti_agrees(real_dir, tmp_path):
    volume = ctvlp.load_volume(real_dir / "dicom_ct_series")
    volume.to_nifti(tmp_path / "d.nii.gz")
    again = ctvlp.load_volume(tmp_path / "d.nii.gz")
    points = _world_points(volume)
    np.testing.assert_array_equal(_hu_at(again, points), _hu_at(volume, points))


def test_mask_loads_on_the_same_grid(real_dir):
    ct = ctvlp.load_volume(real_dir / "chest_ct_angio_1p5mm.nii.gz")
    mask = ctvlp.load_volume(real_dir / "chest_ct_angio_1p5mm_aorta_mask.nii.gz", require_ct=False)
    assert mask.shape == ct.shape and np.allclose(mask.affine, ct.affine)
    assert ct.array[mask.array > 0].mean() > 200  # contrast-enhanced aorta
