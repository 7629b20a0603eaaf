"""Segmentation of real CTs: zero-shot (mask-name anchors) and the probe head on real scans.

Cases (files in ``EvalConfig.real_dir`` / ``ctvlp eval --real-dir``, laid out as ``tests/data/real`` of a ctvlp
checkout, see its README; read in place):

* ``chest``: ``chest_ct_angio_1p5mm.nii.gz`` (contrast chest CT, LPS, 1.5 mm) with its binary aorta mask:
  structure ``aorta``.
* ``abdomen``: ``abdomen_ct_3mm_30slices.nii.gz`` with the multi-label TotalSegmentator mask and
  ``totalsegmentator_total_labels.json`` (label id -> name). :data:`ABDOMEN_PROMPTS` maps prompt names
  to TotalSegmentator names (``left kidney`` <- ``kidney_left``; ``lung`` <- the union of the five lobes);
  a structure is the union of its labels, and one whose labels are all absent from the mask is not listed.

Pipeline, per case: load (``ctvlp.io.load_volume``), :func:`ctvlp.data.preprocess.preprocess` with the
checkpoint's :class:`~ctvlp.data.preprocess.PreprocessConfig` (RAS, target spacing, body crop; masks by
nearest neighbour on the same grid), then exactly the segmentation task's windows, in-plane fit,
stitching and MONAI Dice/HD95 (:func:`ctvlp.eval.segmentation.segment_volumes`). The structure name is
the prompt ("This is left kidney."). The probe (``seg_probe``) scores the structures it was trained on
that the case annotates (others are unannotated, skipped).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctvlp.data.preprocess import PreprocessConfig, preprocess
from ctvlp.data.sampling import SamplerConfig, window_depth
from ctvlp.data.volumes import MemoryVolume
from ctvlp.errors import BadDatasetError
from ctvlp.eval.overlays import OverlayCollector
from ctvlp.eval.segmentation import anchor_predictor, check_voxel_head, segment_volumes, summarise
from ctvlp.fsutil import jsonable
from ctvlp.io.load import load_volume
from ctvlp.io.volume import Volume

ABDOMEN_PROMPTS: dict[str, tuple[str, ...]] = {
    "liver": ("liver",), "spleen": ("spleen",), "left kidney": ("kidney_left",), "right kidney": ("kidney_right",),
    "gallbladder": ("gallbladder",), "stomach": ("stomach",), "pancreas": ("pancreas",), "aorta": ("aorta",),
    "inferior vena cava": ("inferior_vena_cava",), "colon": ("colon",), "small bowel": ("small_bowel",),
    "duodenum": ("duodenum",), "left adrenal gland": ("adrenal_gland_left",),
    "right adrenal gland": ("adrenal_gland_right",), "esophagus": ("esophagus",), "urinary bladder": ("urinary_bladder",),
    "lung": ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
             "lung_lower_lobe_right"),
}
"""Prompt name -> TotalSegmentator ``total`` names whose union is the structure."""

CHEST = ("chest_ct_angio_1p5mm.nii.gz", "chest_ct_angio_1p5mm_aorta_mask.nii.gz")
ABDOMEN = ("abdomen_ct_3mm_30slices.nii.gz", "abdomen_ct_3mm_30slices_totalseg.nii.gz")
LABELS = "totalsegmentator_total_labels.json"


def _read(path: Path, **kw) -> Volume:
    if not path.is_file():
        raise BadDatasetError(path, "real-mask case file missing (see the real data README)")
    return load_volume(path, **kw)


def load_cases(real_dir: str | Path, config: PreprocessConfig) -> dict[str, MemoryVolume]:
    """{``chest``, ``abdomen``}: the real scans preprocessed with ``config``, masks named by prompt."""
    if not str(real_dir):
        raise BadDatasetError(None, "real_masks: no folder of real cases given (ctvlp eval --real-dir DIR, or "
                                    "eval.real_dir; tests/data/real of a ctvlp checkout has the expected files)")
    root = Path(real_dir)
    chest = _read(root / CHEST[0])
    aorta = _read(root / CHEST[1], require_ct=False)
    abdomen = _read(root / ABDOMEN[0])
    labels = _read(root / ABDOMEN[1], require_ct=False)
    ids = {name: int(i) for i, name in json.loads((root / LABELS).read_text()).items()}
    present = set(np.unique(labels.array).tolist())
    organs = {}
    for prompt, names in ABDOMEN_PROMPTS.items():
        wanted = [ids[n] for n in names if ids.get(n) in present]
        if wanted:
            organs[prompt] = Volume(np.isin(labels.array, wanted), labels.affine, labels.path)
    cases = {}
    for vid, image, masks in (("chest", chest, {"aorta": aorta}), ("abdomen", abdomen, organs)):
        done = preprocess(image, masks, config)
        cases[vid] = MemoryVolume(vid, done.image, done.affine_zyx, done.masks)
    return cases


def score_cases(predict, cases: dict[str, MemoryVolume], sampler: SamplerConfig, names_of: dict[str, list[str]],
                hu_window: tuple[float, float], hd95: bool = True, batch_size: int = 2,
                figures: list | None = None, caption: str = "") -> dict:
    """Per case: ``summarise`` of ``segment_volumes(predict, ...)`` over its structures ``names_of[case]``;
    each case's overlay (:mod:`ctvlp.eval.overlays`, captioned ``caption`` + case) appended to ``figures`` when given."""
    out = {}
    for vid, volume in cases.items():
        names = names_of[vid]
        drawn = OverlayCollector(names, 1 if figures is not None else 0, caption)
        scores = segment_volumes(predict, {vid: volume}, sampler, names, hu_window, batch_size, hd95=hd95,
                                 on_volume=drawn)
        if figures is not None:
            figures.extend(drawn.figures)
        out[vid] = {**summarise(scores, names, hd95), "shape_zyx": list(volume.shape),
                    "spacing_zyx": [float(s) for s in volume.spacing_zyx]}
    return out


def case_structures(cases: dict[str, MemoryVolume]) -> dict[str, list[str]]:
    """Each case's annotated structures (its masks but ``body``)."""
    return {vid: [n for n in v.mask_names if n != "body"] for vid, v in cases.items()}


@torch.no_grad()
def evaluate_real_masks(model, preprocess_cfg: PreprocessConfig, sampler: SamplerConfig,
                        device: torch.device | str = "cpu", real_dir: str | Path = "",
                        probe=None, threshold: float = 0.5, hd95: bool = True, batch_size: int = 2,
                        overlays: bool = False) -> dict:
    """Zero-shot segmentation (and the ``probe`` when given) of the real cases (module docstring).

    Returns a JSON-able dict: ``zero_shot`` {case: {``mean_dice``, ``per_structure`` (``dice``, ``hd95`` mm, ...),
    ``mean_hd95``, ``shape_zyx``, ``spacing_zyx``}}, ``probe`` (same, its structures; None without a probe),
    ``threshold``, ``window``, ``real_dir``, ``seconds``; with ``overlays`` also ``overlays``, one figure per
    case and method (:mod:`ctvlp.eval.overlays`)."""
    check_voxel_head(model)
    device = torch.device(device)
    start = time.perf_counter()
    cases = load_cases(real_dir, preprocess_cfg)
    structures = case_structures(cases)
    hu_window = tuple(preprocess_cfg.hu_window)
    was_training = model.training
    model.eval()
    figures = [] if overlays else None
    try:
        zero_shot = {}
        for vid, names in structures.items():
            predict = anchor_predictor(model, names, threshold, device)
            zero_shot.update(score_cases(predict, {vid: cases[vid]}, sampler, structures, hu_window, hd95, batch_size,
                                         figures, "zero-shot, real case "))
        probed = None
        if probe is not None:
            probed = score_cases(probe.predictor(model, device), cases, sampler,
                                 {vid: list(probe.names) for vid in cases}, hu_window, hd95, batch_size,
                                 figures, "probe, real case ")
    finally:
        model.train(was_training)
    metrics = jsonable({"zero_shot": zero_shot, "probe": probed, "threshold": threshold, "window": window_depth(sampler),
                        "real_dir": str(real_dir), "seconds": time.perf_counter() - start,
                        **({"overlays": figures} if overlays else {})})
    json.dumps(metrics)
    return metrics
