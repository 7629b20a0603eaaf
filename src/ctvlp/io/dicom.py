"""DICOM series folders through pydicom.

Geometry comes from the slices' ImagePositionPatient (IPP) and ImageOrientationPatient (IOP):
slices are sorted by their position along the normal n = row x col, the slice spacing is the
distance between neighbouring positions (never SliceThickness, which may differ), and the gaps must
be uniform. The array is indexed (i = column, j = row, k = slice), so voxel (i, j, k) sits at
IPP_0 + i * dc * row + j * dr * col + k * ds * n in LPS, converted to RAS.

An enhanced multi-frame file (one file, NumberOfFrames > 1, e.g. Enhanced CT Image Storage) is read
frame by frame: each frame's IPP from its PerFrameFunctionalGroupsSequence item, IOP, PixelSpacing and
the rescale pair from the per-frame item or else the SharedFunctionalGroupsSequence, then sorted and
spaced like the slices of a classic series. A multi-frame file without per-frame positions is refused.
The series' Modality travels in ``Volume.meta["modality"]`` (``load_volume`` refuses one that is not CT).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctvlp.errors import BadVolumeError
from ctvlp.io._convert import LPS_TO_RAS, error_text, to_hu
from ctvlp.io.volume import Volume

IOP_TOLERANCE = 1e-4
GAP_TOLERANCE = 0.1  # relative deviation from the median spacing that counts as a gap


@dataclass
class _Slice:
    path: Path
    position: np.ndarray  # (3,) IPP, LPS mm
    orientation: np.ndarray  # (6,) IOP
    pixel_spacing: tuple[float, float]  # (row spacing dr, column spacing dc)
    thickness: float
    modality: str = ""
    frame: int | None = None  # index into a multi-frame file's pixel data; None: a single-frame file

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name} frame {self.frame + 1}"


def _frames(ds) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def _is_image(ds) -> bool:
    """A slice or a multi-frame image (not a DICOMDIR, report or presentation state)."""
    return "Rows" in ds and ("ImagePositionPatient" in ds or "PerFrameFunctionalGroupsSequence" in ds
                             or _frames(ds) > 1)


def _functional(ds, frame: int, sequence: str):
    """Item of ``sequence`` for ``frame`` of a multi-frame file: its per-frame group, else the shared one."""
    groups = [ds.PerFrameFunctionalGroupsSequence[frame]] if "PerFrameFunctionalGroupsSequence" in ds else []
    groups += list(ds.get("SharedFunctionalGroupsSequence") or [])[:1]
    for group in groups:
        items = group.get(sequence)
        if items:
            return items[0]
    raise AttributeError(f"frame {frame + 1} has no {sequence} in its functional groups")


def _slices_of(path: Path, ds) -> list[_Slice]:
    """One _Slice per image of a file (a classic slice, or every frame of a multi-frame file)."""
    modality = str(ds.get("Modality", "")).strip()
    if _frames(ds) == 1 and "ImagePositionPatient" in ds:
        spacing = tuple(float(v) for v in ds.PixelSpacing)
        return [_Slice(path, np.array(ds.ImagePositionPatient, dtype=np.float64),
                       np.array(ds.ImageOrientationPatient, dtype=np.float64), spacing,
                       float(ds.get("SliceThickness") or 0), modality)]
    if "PerFrameFunctionalGroupsSequence" not in ds:
        raise AttributeError(f"a multi-frame image ({_frames(ds)} frames) without per-frame positions "
                             "(PerFrameFunctionalGroupsSequence); convert it to a series of slices")
    slices = []
    for k in range(_frames(ds)):
        measures = _functional(ds, k, "PixelMeasuresSequence")
        slices.append(_Slice(path, np.array(_functional(ds, k, "PlanePositionSequence").ImagePositionPatient,
                                            dtype=np.float64),
                             np.array(_functional(ds, k, "PlaneOrientationSequence").ImageOrientationPatient,
                                      dtype=np.float64),
                             tuple(float(v) for v in measures.PixelSpacing),
                             float(measures.get("SliceThickness") or 0), modality, k))
    return slices


def _check_spacing(path: Path, item: _Slice) -> None:
    if len(item.pixel_spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in item.pixel_spacing):
        raise BadVolumeError(path, f"PixelSpacing {list(item.pixel_spacing)} of {item.name} is not two positive "
                                   "numbers (mm)")


def _headers(folder: Path) -> dict[str, list[_Slice]]:
    """Image slices (or frames) of the folder grouped by SeriesInstanceUID; non-DICOM files are ignored."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[_Slice]] = defaultdict(list)
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as err:
        raise BadVolumeError(folder, f"cannot list the folder ({error_text(err)})") from None
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue  # not DICOM (no preamble): README, .txt, thumbnails
        except Exception as err:
            raise BadVolumeError(path, f"unreadable DICOM file ({error_text(err)})") from None
        if not _is_image(ds):
            continue  # DICOMDIR, reports, presentation states
        try:
            found = _slices_of(path, ds)
        except (AttributeError, ValueError, TypeError, IndexError, KeyError) as err:
            raise BadVolumeError(path, f"DICOM image without usable geometry ({err})") from None
        for item in found:
            _check_spacing(path, item)
        series[str(ds.get("SeriesInstanceUID", ""))].extend(found)
    return series


def _choose_series(folder: Path, series: dict[str, list[_Slice]], uid: str | None) -> tuple[str, list[_Slice]]:
    """(SeriesInstanceUID, its slices): the requested series, or the folder's only one."""
    if not series:
        raise BadVolumeError(folder, "no DICOM image slices in this folder")
    if uid is not None:
        if uid not in series:
            raise BadVolumeError(folder, f"series {uid} not in this folder (has {sorted(series)})")
        return uid, series[uid]
    if len(series) > 1:
        listing = ", ".join(f"{u or '(empty UID)'} ({len(s)} slices)" for u, s in sorted(series.items()))
        raise BadVolumeError(folder, f"folder mixes {len(series)} series: {listing}; give each series its "
                                     "own folder, or choose one (ctvlp info --series-uid, series_uid= in Python)")
    return next(iter(series.items()))


def _sorted_geometry(folder: Path, slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray, float]:
    """Slices sorted along the normal, the normal (3,), and the uniform slice spacing."""
    iop = slices[0].orientation
    odd = [s for s in slices if np.abs(s.orientation - iop).max() > IOP_TOLERANCE]
    if odd:
        raise BadVolumeError(folder, f"slices disagree on ImageOrientationPatient: {odd[0].name} has "
                                     f"{odd[0].orientation.round(4).tolist()}, {slices[0].name} has "
                                     f"{iop.round(4).tolist()}")
    normal = np.cross(iop[:3], iop[3:])
    depth = np.array([s.position @ normal for s in slices])  # (K,) mm along the normal
    order = np.argsort(depth, kind="stable")
    slices, depth = [slices[i] for i in order], depth[order]
    if len(slices) == 1:
        return slices, normal, slices[0].thickness or 1.0
    gaps = np.diff(depth)  # (K-1,)
    if np.any(gaps < 1e-3):
        at = int(np.argmin(gaps))
        raise BadVolumeError(folder, f"two slices at the same position ({slices[at].name}, "
                                     f"{slices[at + 1].name})")
    spacing = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - spacing) > GAP_TOLERANCE * spacing)
    if bad.size:
        k = int(bad[0])
        raise BadVolumeError(folder, f"non-uniform slice positions: gap of {gaps[k]:.2f} mm between "
                                     f"{slices[k].name} and {slices[k + 1].name} (spacing "
                                     f"{spacing:.2f} mm): missing slice(s)?")
    return slices, normal, spacing


def _rescale(ds, frame: int | None) -> tuple[float, float]:
    """(slope, intercept) of a slice, or of a frame (its PixelValueTransformationSequence, else the file's)."""
    source = ds
    if frame is not None:
        try:
            source = _functional(ds, frame, "PixelValueTransformationSequence")
        except AttributeError:
            pass
    return float(source.get("RescaleSlope", 1) or 1), float(source.get("RescaleIntercept", 0) or 0)


def _pixels(slices: list[_Slice]) -> np.ndarray:
    """(I, J, K) HU: pixel_array (rows=j, cols=i) per slice or frame, rescaled per slice or frame."""
    import pydicom

    planes, decoded = [], {}
    for s in slices:
        try:
            if s.path not in decoded:  # a multi-frame file is decoded once, for all its frames
                ds = pydicom.dcmread(s.path)
                decoded = {s.path: (ds, ds.pixel_array)}
            ds, pixels = decoded[s.path]
            plane = pixels[s.frame] if s.frame is not None and pixels.ndim == 3 else pixels
            plane = to_hu(plane, *_rescale(ds, s.frame))
        except Exception as err:
            raise BadVolumeError(s.path, f"cannot decode pixel data ({error_text(err)})") from None
        planes.append(plane)
    shapes = {p.shape for p in planes}
    if len(shapes) > 1:
        raise BadVolumeError(slices[0].path.parent, f"slices differ in size: {sorted(shapes)}")
    dtype = np.result_type(*planes)
    return np.stack(planes, axis=-1).astype(dtype, copy=False).transpose(1, 0, 2)  # (J, I, K) -> (I, J, K)


def _series_of_file(path: Path) -> str:
    """SeriesInstanceUID of one DICOM file, or a clear error when it is not a DICOM image."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:
        raise BadVolumeError(path, f"not a readable DICOM file ({error_text(err)})") from None
    if not _is_image(ds):
        raise BadVolumeError(path, "DICOM file is not an image slice (no ImagePositionPatient or Rows)")
    return str(ds.get("SeriesInstanceUID", ""))


def read_dicom_series(folder: Path, series_uid: str | None = None) -> Volume:
    """Read one DICOM series from a folder (or the series of one given file)."""
    folder = Path(folder)
    if folder.is_file():
        series_uid = series_uid or _series_of_file(folder)
        folder = folder.parent
    series_uid, slices = _choose_series(folder, _headers(folder), series_uid)
    slices, normal, spacing = _sorted_geometry(folder, slices)
    iop, (dr, dc) = slices[0].orientation, slices[0].pixel_spacing
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * dc  # i: along the row direction, column spacing
    lps[:3, 1] = iop[3:] * dr  # j: along the column direction, row spacing
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = slices[0].position
    array = _pixels(slices)
    meta = {"reader": "dicom", "series_uid": series_uid, "slices": len(slices),
            "slice_thickness": slices[0].thickness, "modality": slices[0].modality}
    one_file = slices[0].frame is not None and all(s.path == slices[0].path for s in slices)
    return Volume(array, LPS_TO_RAS @ lps, path=str(slices[0].path if one_file else folder), meta=meta)
