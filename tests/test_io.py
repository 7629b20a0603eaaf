"""Bad input to `load_volume`: every problem is one CtvlpError naming the file and the reason.

Bad variants are built in tmp_path from the real files (never copied into the repository) or from
tiny synthetic arrays. The real DICOM series is decoded once per module.
"""

import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from ctvlp import CtvlpError, load_volume
from ctvlp.errors import BadVolumeError

ABDOMEN = "abdomen_ct_3mm_30slices.nii.gz"
SERIES = "dicom_ct_series"


def refused(path, *reason_parts, **kwargs) -> CtvlpError:
    """load_volume(path) must raise a one-line CtvlpError naming path and holding every reason part."""
    with pytest.raises(CtvlpError) as info:
        load_volume(path, **kwargs)
    err = info.value
    assert isinstance(err, BadVolumeError)
    assert err.path == str(path) and str(path) in str(err)
    assert "\n" not in str(err), str(err)
    for part in reason_parts:
        assert part in err.reason, (part, err.reason)
    return err


def refused_somewhere(path) -> CtvlpError:
    """Like refused(), for errors that may name a file inside the folder instead of the folder."""
    with pytest.raises(CtvlpError) as info:
        load_volume(path)
    assert "\n" not in str(info.value)
    return info.value


def save_nifti(path, array, affine=None):
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def ct_like(shape=(6, 5, 4)) -> np.ndarray:
    """Tiny int16 'CT': air outside, water and bone inside."""
    array = np.full(shape, -1000, np.int16)
    array[1:-1, 1:-1, 1:-1] = 40
    array[2, 2, 1] = 700
    return array


@pytest.fixture(scope="module")
def series_volume(real_dir):
    """The real DICOM series, decoded once."""
    return load_volume(real_dir / SERIES)


@pytest.fixture(scope="module")
def series_files(real_dir):
    """The series' files sorted by ImagePositionPatient z (the slice normal is +z)."""
    files = sorted((real_dir / SERIES).iterdir())
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    return [files[i] for i in np.argsort(z)]


def copy_series(series_files, folder, edit=None):
    """Copy the real series to folder; edit(index, dataset) may change headers (index in z order)."""
    folder.mkdir()
    for index, src in enumerate(series_files):
        if edit is None:
            shutil.copy(src, folder / src.name)
            continue
        ds = pydicom.dcmread(src)
        edit(index, ds)
        ds.save_as(folder / src.name)
    return folder


def hu_at_same_world_points(volume, reference) -> tuple[np.ndarray, np.ndarray]:
    """HU of every voxel of volume and of reference at those voxels' world positions."""
    ijk = np.stack(np.meshgrid(*[np.arange(0, s, max(1, s // 7)) for s in volume.shape], indexing="ij"),
                   axis=-1).reshape(-1, 3)  # (N, 3)
    ref = reference.world_to_index(volume.index_to_world(ijk))  # (N, 3)
    assert np.abs(ref - np.rint(ref)).max() < 1e-3
    i, j, k = np.rint(ref).astype(int).T
    return volume.array[tuple(ijk.T)], reference.array[i, j, k]


# ---------------------------------------------------------------- files that cannot be read


def test_truncated_nifti_gz(real_dir, tmp_path):
    data = (real_dir / ABDOMEN).read_bytes()
    half = tmp_path / "half.nii.gz"
    half.write_bytes(data[: len(data) // 2])
    refused(half, "cannot read NIfTI")
    header_only = tmp_path / "header_only.nii.gz"
    header_only.write_bytes(data[:100])
    refused(header_only, "cannot read NIfTI")


def test_truncated_uncompressed_nifti_is_one_line(tmp_path):
    full = save_nifti(tmp_path / "full.nii", ct_like((20, 20, 20)))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(full.read_bytes()[:-3000])
    refused(cut, "cannot read NIfTI")  # nibabel's message spans two lines


@pytest.mark.parametrize("name", ["empty.nii.gz", "empty.nii", "empty.mha", "empty.nrrd", "empty.dcm"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    refused(tmp_path / name, "empty file")


@pytest.mark.parametrize("name, reason", [("junk.nii.gz", "cannot read NIfTI"), ("junk.mha", "cannot read image"),
                                          ("junk.nrrd", "cannot read image"), ("junk.dcm", "not a readable DICOM")])
def test_junk_content_with_a_known_suffix(tmp_path, name, reason):
    (tmp_path / name).write_bytes(b"not a volume\n" * 40)
    refused(tmp_path / name, reason)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(real_dir, tmp_path):
    path = tmp_path / "locked.nii.gz"
    shutil.copy(real_dir / ABDOMEN, path)
    path.chmod(0)
    refused(path, "PermissionError")


def test_missing_path(tmp_path):
    refused(tmp_path / "nope.nii.gz", "no such file")


@pytest.mark.parametrize("name", ["scan.png", "scan.nii.bz2", "no_suffix"])
def test_unknown_format(tmp_path, name):
    (tmp_path / name).write_bytes(b"\x89PNG\r\n" + bytes(200))
    refused(tmp_path / name, "unknown volume format")


def test_folder_without_dicom(tmp_path):
    refused(tmp_path, "no DICOM image slices")
    (tmp_path / "README.txt").write_text("scans go here")
    save_nifti(tmp_path / "scan.nii.gz", ct_like())
    (tmp_path / "sub").mkdir()
    refused(tmp_path, "no DICOM image slices")


# ---------------------------------------------------------------- arrays that are not a CT volume


def test_nan_and_inf_voxels(tmp_path):
    array = ct_like().astype(np.float32)
    array[0, 0, 0] = array[1, 2, 3] = np.nan
    array[2, 2, 2] = -np.inf
    refused(save_nifti(tmp_path / "nan.nii.gz", array), "3 voxel(s) are NaN or infinite")


def test_scaling_that_overflows_is_a_clear_error(tmp_path):
    img = nib.Nifti1Image(ct_like(), np.eye(4))
    img.header.set_slope_inter(1e38, 0.0)  # integral but far beyond int64: must not reach int()
    nib.save(img, tmp_path / "huge.nii")
    refused(tmp_path / "huge.nii", "NaN or infinite", require_ct=False)


@pytest.mark.parametrize("shape", [(4, 0, 6), (0, 5, 6), (4, 5, 0)])
def test_zero_size_axis(tmp_path, shape):
    path = save_nifti(tmp_path / "zero.nii.gz", np.zeros(shape, np.int16))
    refused(path, f"zero-size axis in shape {shape}")


def test_trailing_singleton_axes_are_dropped(tmp_path):
    array = ct_like()
    for extra in [(1,), (1, 1)]:
        path = save_nifti(tmp_path / f"{len(extra)}.nii.gz", array.reshape(array.shape + extra))
        volume = load_volume(path)
        assert volume.shape == array.shape
        np.testing.assert_array_equal(volume.array, array)


@pytest.mark.parametrize("shape, reason", [((6, 5, 4, 3), "series of volumes"), ((6, 5), "expected a 3-D volume")])
def test_not_three_dimensional(tmp_path, shape, reason):
    path = save_nifti(tmp_path / "nd.nii.gz", np.full(shape, -1000, np.int16))
    refused(path, f"got shape {shape}", reason)


def test_rgb_and_complex_voxels_are_refused(tmp_path):
    rgb = np.zeros((4, 5, 6), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    refused(save_nifti(tmp_path / "rgb.nii.gz", rgb), "not one real number", require_ct=False)
    cplx = ct_like().astype(np.complex64) + 1j  # casting would silently drop the imaginary part
    refused(save_nifti(tmp_path / "cplx.nii.gz", cplx), "not one real number")


def test_mr_intensity_range(tmp_path):
    rng = np.random.default_rng(0)
    mr = rng.gamma(2.0, 300.0, (16, 16, 16)).astype(np.int16)  # MR-like: non-negative, arbitrary units
    path = save_nifti(tmp_path / "t1.nii.gz", mr)
    refused(path, "do not look like CT", f"max {mr.max()}")
    np.testing.assert_array_equal(load_volume(path, require_ct=False).array, mr)


def test_raw_unrescaled_ct_is_refused(real_dir, tmp_path):
    """A real CT saved without its -1024 intercept has air near 0: refused, but loads without the check."""
    img = nib.load(real_dir / ABDOMEN)
    raw = (np.asarray(img.dataobj).astype(np.int32) + 1024).astype(np.int16)  # (I, J, K)
    path = save_nifti(tmp_path / "raw.nii.gz", raw, img.affine)
    refused(path, "do not look like CT", "rescale")
    np.testing.assert_array_equal(load_volume(path, require_ct=False).array, raw)


# ---------------------------------------------------------------- DICOM folders


def test_mixed_series_lists_uids_and_series_uid_selects(series_files, series_volume, tmp_path):
    uids = ["1.2.826.0.1.3680043.9.1", "1.2.826.0.1.3680043.9.2"]

    def interleave(index, ds):  # even slices in one series, odd slices in the other
        ds.SeriesInstanceUID = uids[index % 2]

    folder = copy_series(series_files, tmp_path / "mixed", interleave)
    refused(folder, "mixes 2 series", f"{uids[0]} (10 slices)", f"{uids[1]} (10 slices)", "series_uid")
    refused(folder, "series 9.9 not in this folder", uids[0], series_uid="9.9")
    for parity, uid in enumerate(uids):
        part = load_volume(folder, series_uid=uid)
        assert part.shape == (512, 512, 10) and part.meta["series_uid"] == uid
        np.testing.assert_allclose(part.spacing, [0.9765625, 0.9765625, 4.0], atol=1e-6)
        np.testing.assert_allclose(part.affine[:3, 3], series_volume.index_to_world([0, 0, parity])[0])
        np.testing.assert_array_equal(*hu_at_same_world_points(part, series_volume))


def test_anonymised_empty_series_uid_is_listed_and_selectable(series_files, tmp_path):
    """The real series has an empty SeriesInstanceUID; a second series beside it must not hide that."""
    def add_series(index, ds):
        if index < 5:
            ds.SeriesInstanceUID = "1.2.3"

    folder = copy_series(series_files, tmp_path / "anon", add_series)
    refused(folder, "(empty UID) (15 slices)", "1.2.3 (5 slices)")
    assert load_volume(folder, series_uid="").shape == (512, 512, 15)


def test_missing_slice_is_a_gap_error(series_files, tmp_path):
    folder = copy_series(series_files, tmp_path / "gap")
    gone = series_files[7]
    (folder / gone.name).unlink()
    refused(folder, "gap of 4.00 mm", series_files[6].name, series_files[8].name, "spacing 2.00 mm",
            "missing slice")


def test_duplicate_slice_position(series_files, tmp_path):
    folder = copy_series(series_files, tmp_path / "dup")
    shutil.copy(series_files[3], folder / "copy_of_slice_3")
    refused(folder, "two slices at the same position")


def test_inconsistent_orientation(series_files, tmp_path):
    def tilt(index, ds):
        if index == 5:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, -0.6]

    folder = copy_series(series_files, tmp_path / "tilted", tilt)
    refused(folder, "disagree on ImageOrientationPatient", series_files[5].name)


def test_non_dicom_files_in_the_folder_are_ignored(series_files, series_volume, tmp_path):
    folder = copy_series(series_files, tmp_path / "cluttered")
    (folder / "README.txt").write_text("exported from PACS")
    (folder / "Thumbs.db").write_bytes(bytes(range(256)) * 4)
    save_nifti(folder / "preview.nii.gz", ct_like())
    (folder / "subfolder").mkdir()
    volume = load_volume(folder)
    assert volume.shape == series_volume.shape
    np.testing.assert_array_equal(volume.affine, series_volume.affine)
    np.testing.assert_array_equal(volume.array, series_volume.array)


def test_single_file_path_reads_its_series(series_files, series_volume):
    volume = load_volume(series_files[4])  # no suffix: recognised by the DICM preamble
    assert volume.meta["format"] == "dicom" and volume.path == str(series_files[4].parent)
    np.testing.assert_array_equal(volume.affine, series_volume.affine)
    np.testing.assert_array_equal(volume.array, series_volume.array)


def test_lone_slice_file(series_files, series_volume, tmp_path):
    (tmp_path / "one").mkdir()
    lone = tmp_path / "one" / "slice.dcm"
    shutil.copy(series_files[4], lone)
    volume = load_volume(lone)
    assert volume.shape == (512, 512, 1)
    assert volume.spacing[2] == pytest.approx(3.0)  # SliceThickness: no neighbour gives the spacing
    np.testing.assert_array_equal(*hu_at_same_world_points(volume, series_volume))


def test_single_file_that_is_not_an_image_slice(series_files, tmp_path):
    ds = pydicom.dcmread(series_files[0], stop_before_pixels=True)
    del ds.ImagePositionPatient
    ds.save_as(tmp_path / "report.dcm")
    refused(tmp_path / "report.dcm", "not an image slice")


@pytest.mark.filterwarnings("ignore:End of file reached:UserWarning")
def test_truncated_slice_names_the_file(series_files, tmp_path):
    folder = copy_series(series_files, tmp_path / "cut")
    victim = folder / series_files[9].name
    victim.write_bytes(victim.read_bytes()[:5000])  # header intact, pixel data cut
    err = refused_somewhere(folder)
    assert err.path in (str(folder), str(victim))
    assert victim.name in str(err)



# ---------------------------------------------------------------- NRRD / MHA


def _oblique_itk_image() -> tuple[sitk.Image, np.ndarray, np.ndarray]:
    """A small int16 image with an oblique direction; returns it, its (i, j, k) array and its RAS affine."""
    array = ct_like((7, 6, 5))  # (i, j, k)
    image = sitk.GetImageFromArray(array.transpose(2, 1, 0))  # ITK wants (z, y, x)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # LPS, columns = index axes
    image.SetDirection(direction.ravel().tolist())
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    lps = np.eye(4)
    lps[:3, :3] = direction * np.array([0.7, 0.8, 2.5])
    lps[:3, 3] = [10.0, -20.0, 30.0]
    return image, array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_round_trip(tmp_path, suffix):
    image, array, affine = _oblique_itk_image()
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    volume = load_volume(tmp_path / f"v{suffix}")
    assert volume.meta["format"] == "itk" and volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-9)


def test_itk_bad_content(tmp_path):
    flat = sitk.GetImageFromArray(np.full((5, 6), -1000, np.int16))
    sitk.WriteImage(flat, str(tmp_path / "flat.mha"))
    refused(tmp_path / "flat.mha", "expected a 3-D scalar image, got 2-D")
    vector = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vector.nrrd"))
    refused(tmp_path / "vector.nrrd", "3 component(s)")
    nan = ct_like().astype(np.float32)
    nan[1, 1, 1] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(nan), str(tmp_path / "nan.mha"))
    refused(tmp_path / "nan.mha", "1 voxel(s) are NaN")


def test_integer_masks_and_labels_keep_exact_values(tmp_path):
    """(u)int8 files (masks, label maps) come back as exact int16, without a detour through wider types;
    a uint16 file whose values exceed int16 is widened instead of wrapped."""
    for dtype, values in [(np.uint8, [0, 1, 7, 255]), (np.int8, [-128, -1, 0, 127]), (np.uint16, [0, 40000])]:
        data = np.resize(np.array(values, dtype), (4, 3, 2))
        path = tmp_path / f"m_{np.dtype(dtype).name}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
        out = load_volume(path, require_ct=False).array
        assert out.dtype == (np.float32 if dtype == np.uint16 else np.int16)
        np.testing.assert_array_equal(out, data.astype(np.int64))
