"""`ctvlp info PATH`: what a CT file or DICOM folder holds, and where it sits in the world."""

from __future__ import annotations

import argparse
import json
import warnings


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="print shape, spacing, orientation, HU range and slice count of a volume",
                       description="Read a NIfTI / NRRD / MHA file or a DICOM series folder and describe it.")
    p.add_argument("path", help="a .nii/.nii.gz/.nrrd/.mha/.mhd file or a DICOM series folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--series-uid", default=None, help="series to read from a DICOM folder with several")
    p.add_argument("--no-ct-check", action="store_true", help="describe non-CT volumes (masks, MR) too")
    p.set_defaults(func=run)
    return p


def describe(volume) -> dict:
    """The facts `ctvlp info` prints, as plain JSON-serialisable values.

    hu_min/hu_max cover every voxel; hu_p1/hu_p99 are exact up to ~7M voxels and taken on a strided
    sub-grid of ~2M voxels beyond.
    """
    import numpy as np

    from ctvlp.io.load import strided_sample

    hu = volume.array
    p1, p99 = np.percentile(strided_sample(hu), [1, 99])
    superior = int(np.argmax(np.abs(volume.affine[2, :3]) / volume.spacing))  # axis closest to S-I
    return {
        "path": volume.path, "format": volume.meta.get("format"), "shape": list(volume.shape),
        "dtype": str(volume.array.dtype), "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        "orientation": volume.orientation, "slices": volume.shape[superior],
        "hu_min": float(hu.min()), "hu_max": float(hu.max()),
        "hu_p1": round(float(p1), 1), "hu_p99": round(float(p99), 1),
        "origin_mm": [round(float(x), 3) for x in volume.affine[:3, 3]],
    }


def run(args: argparse.Namespace) -> int:
    from ctvlp.io.load import load_volume

    with warnings.catch_warnings(record=True) as caught:  # a failed read ends in one error line only
        warnings.simplefilter("always")
        volume = load_volume(args.path, require_ct=not args.no_ct_check, series_uid=args.series_uid)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    facts = describe(volume)
    if args.json:
        print(json.dumps(facts))
        return 0
    width = max(len(k) for k in facts)
    for key, value in facts.items():
        print(f"{key:<{width}}  {value}")
    return 0
