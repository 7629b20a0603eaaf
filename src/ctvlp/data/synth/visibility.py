"""How visible each rendered finding is at a demo's resolution, measured on the written files.

Each volume (read from disk, HU detected by ``adapters.fixes.decide_hu``) and each finding mask are
resampled linearly to ``grid`` voxels in-plane and the same spacing along z (near-isotropic, as a
demo model sees them). A lesion is a connected component of the resampled mask (fraction >= 0.5);
its size is its voxel count and the longest side of its bounding box, its contrast the median HU
inside minus the median HU of a two-voxel shell around it within the finding's host region (lung for
lung findings, heart, aorta, mediastinum). A full-resolution lesion (connected component at least one
demo voxel large) none of whose voxels falls in a kept voxel at the demo's resolution is ``lost``. Cardiomegaly is measured as the cardiothoracic
ratio (widest heart over widest thoracic cavity, in voxels along x) of volumes with and without it.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ctvlp.data.adapters.fixes import decide_hu
from ctvlp.data.synth.findings import RENDERED, slug

SHELL = 2
HOST_REGION: dict[str, str] = {
    **{label: "lung" for label in ("Lung nodule", "Lung opacity", "Consolidation", "Atelectasis", "Emphysema",
                                   "Mosaic attenuation pattern", "Pleural effusion")},
    "Pericardial effusion": "heart", "Coronary artery wall calcification": "heart",
    "Arterial wall calcification": "aorta", "Lymphadenopathy": "mediastinum", "Hiatal hernia": "mediastinum",
}
"""The region a finding's contrast is measured against (the shell is limited to it); others: anything."""


def _resample(array: np.ndarray, zoom: tuple[float, float, float]) -> np.ndarray:
    return ndimage.zoom(array.astype(np.float32), zoom, order=1, grid_mode=True, mode="grid-constant",
                        cval=float(array.min()))


def lesions(hu: np.ndarray, mask: np.ndarray, zoom: tuple[float, float, float],
            host: np.ndarray | None = None) -> list[dict]:
    """Size and contrast of each lesion of ``mask`` after resampling by ``zoom`` (plus lost ones).

    ``host``: the full-resolution region the surrounding shell must lie in (None: anywhere).
    """
    small = _resample(mask, zoom) >= 0.5
    low_hu = _resample(hu, zoom)
    low_host = _resample(host, zoom) >= 0.5 if host is not None else np.ones_like(small)
    components, count = ndimage.label(small)
    rows = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        lesion = components == index
        shell = ndimage.binary_dilation(lesion, iterations=SHELL) & ~small & low_host
        extent = max(s.stop - s.start for s in box)
        contrast = float(np.median(low_hu[lesion]) - np.median(low_hu[shell])) if shell.any() else float("nan")
        rows.append({"voxels": int(lesion.sum()), "extent": int(extent), "contrast": contrast, "lost": False})
    lost = _lost(mask, small, zoom)
    rows += [{"voxels": 0, "extent": 0, "contrast": float("nan"), "lost": True}] * lost
    return rows


def _lost(mask: np.ndarray, small: np.ndarray, zoom: tuple[float, float, float]) -> int:
    """Full-resolution lesions none of whose voxels falls in a kept voxel of the resampled mask.

    Fragments smaller than one voxel of the resampled grid (slivers left where another structure
    cut a finding) are not lesions and are not counted.
    """
    components, _ = ndimage.label(mask)
    lost, smallest = 0, 1.0 / float(np.prod(zoom))
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        points = np.argwhere(components[box] == index) + [s.start for s in box]  # (P, 3)
        if len(points) < smallest:
            continue
        low = np.minimum((points * np.asarray(zoom)).astype(int), np.array(small.shape) - 1)  # (P, 3)
        lost += not small[low[:, 0], low[:, 1], low[:, 2]].any()
    return lost


def cardiothoracic_ratio(heart: np.ndarray, thorax: np.ndarray) -> float:
    """Widest heart over widest thorax, both measured along array axis 0 (x) over all slices."""
    def width(mask: np.ndarray) -> int:
        xs = np.nonzero(mask.any(axis=(1, 2)))[0]
        return int(xs[-1] - xs[0] + 1) if xs.size else 0

    return width(heart) / max(width(thorax), 1)


def measure_volume(path: Path, mask_dir: Path, present: list[str], grid: int = 64) -> list[dict]:
    """Rows (label, voxels, extent, contrast, lost) for every lesion of the present labels."""
    img = nib.load(str(path))
    stored = np.asarray(img.dataobj)  # (X, Y, Z)
    hu = stored.astype(np.float32) - (1024.0 if decide_hu(stored, 1.0, -1024.0).kind == "rescaled" else 0.0)
    sx, sy, sz = img.header.get_zooms()[:3]
    new_xy = sx * hu.shape[0] / grid
    zoom = (grid / hu.shape[0], grid / hu.shape[1], float(sz) / new_xy)
    rows = []
    for label in present:
        mask_path = mask_dir / f"{slug(label)}.nii.gz"
        if label == "Cardiomegaly" or not mask_path.is_file():
            continue
        mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0
        host_path = mask_dir / f"{HOST_REGION.get(label, '')}.nii.gz"
        host = np.asarray(nib.load(str(host_path)).dataobj) > 0 if label in HOST_REGION else None
        rows += [{"label": label, **row} for row in lesions(hu, mask, zoom, host)]
    return rows


def _thorax_ratio(mask_dir: Path) -> float:
    load = lambda name: np.asarray(nib.load(str(mask_dir / f"{name}.nii.gz")).dataobj) > 0
    return cardiothoracic_ratio(load("heart"), load("lung") | load("mediastinum") | load("pleura"))


def measure_cohort(root: str | Path, max_volumes: int = 100, grid: int = 64) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-lesion rows, per-label summary) over the first ``max_volumes`` training volumes of a cohort."""
    root = Path(root)
    labels = pd.read_csv(root / "dataset/multi_abnormality_labels/train_predicted_labels.csv").head(max_volumes)
    rows, ratios = [], []
    for _, row in labels.iterrows():
        stem = row["VolumeName"].removesuffix(".nii.gz")
        patient, scan = stem.rsplit("_", 2)[0], stem.rsplit("_", 1)[0]
        path = root / "dataset" / "train" / patient / scan / row["VolumeName"]
        mask_dir = root / "radgenome" / "masks" / f"seg_{stem}"
        present = [label for label in RENDERED if row[label] == 1]
        rows += [{"volume": stem, **r} for r in measure_volume(path, mask_dir, present, grid)]
        ratios.append({"cardiomegaly": int(row["Cardiomegaly"]), "ctr": _thorax_ratio(mask_dir)})
    return pd.DataFrame(rows), summarise(pd.DataFrame(rows), pd.DataFrame(ratios))


SEEN_VOXELS = 8
"""A volume 'shows' a finding when one of its lesions keeps at least this many voxels (a 2 x 2 x 2 cube)."""


def summarise(lesion_rows: pd.DataFrame, ratios: pd.DataFrame) -> pd.DataFrame:
    """Per label: volumes that show it, lesions, lost share, voxels (median, 10th pct), extent, contrast."""
    out = []
    for label, group in lesion_rows.groupby("label", sort=False):
        kept = group[~group["lost"]]
        shown = group.groupby("volume")["voxels"].max() >= SEEN_VOXELS
        out.append({"label": label, "volumes": len(shown), "shown": round(float(shown.mean()), 3),
                    "lesions": len(group), "lost": round(float(group["lost"].mean()), 3),
                    "voxels_median": float(kept["voxels"].median()), "voxels_p10": float(kept["voxels"].quantile(0.1)),
                    "extent_median": float(kept["extent"].median()),
                    "contrast_median_hu": round(float(kept["contrast"].median()), 0)})
    for flag, name in ((1, "Cardiomegaly (CTR with)"), (0, "Cardiomegaly (CTR without)")):
        part = ratios[ratios["cardiomegaly"] == flag]["ctr"] if len(ratios) else pd.Series(dtype=float)
        out.append({"label": name, "lesions": len(part), "ctr_median": round(float(part.median()), 3) if len(part)
                    else float("nan"), "ctr_min": round(float(part.min()), 3) if len(part) else float("nan"),
                    "ctr_max": round(float(part.max()), 3) if len(part) else float("nan")})
    return pd.DataFrame(out)
