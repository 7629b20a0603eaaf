"""Real-mask segmentation (eval/real_masks.py) on the real CTs of tests/data/real: geometry of the scoring (the reference
as the prediction gives Dice 1 and HD95 0; a one-voxel shift along x gives HD95 = the x spacing in mm), the
TotalSegmentator name mapping, and a random tiny SegVL model end to end (plumbing, not quality)."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.real_masks import evaluate_real_masks, load_cases, score_cases, case_structures
from ctvlp.eval.suite import EXTRA_TASKS
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe
from conftest import REAL

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIG = PreprocessConfig(spacing=(1.5, 1.5, 3.0))


@pytest.fixture(scope="module")
def cases():
    return load_cases(REAL, CONFIG)


def test_cases_are_on_the_preprocessing_grid_with_prompt_names(cases):
    assert set(cases) == {"chest", "abdomen"}
    for volume in cases.values():
        np.testing.assert_allclose(volume.spacing_zyx, [3.0, 1.5, 1.5], atol=1e-6)
    structures = case_structures(cases)
    assert structures["chest"] == ["aorta"]
    assert {"liver", "spleen", "left kidney", "right kidney", "aorta", "lung"} <= set(structures["abdomen"])
    assert "esophagus" not in structures["abdomen"]  # not in this mask: not listed
    liver = cases["abdomen"].mask_slab(0, cases["abdomen"].shape[0], ["liver"])[0]
    # 38634 voxels of 3 mm^3 -> about 38634 * 27 / (1.5 * 1.5 * 3) voxels after resampling (nearest neighbour)
    assert liver.sum() == pytest.approx(38634 * 27 / 6.75, rel=0.05)


def test_reference_as_prediction_gives_dice_1_and_one_voxel_shift_the_x_spacing(cases):
    sampler = SamplerConfig(mode="whole", text="report")
    structures = case_structures(cases)
    exact = score_cases(lambda batch: batch["masks"], cases, sampler, structures, CONFIG.hu_window)
    shifted = score_cases(lambda batch: torch.roll(batch["masks"], 1, dims=-1), cases, sampler, structures,
                          CONFIG.hu_window)
    for vid in cases:
        for name, entry in exact[vid]["per_structure"].items():
            assert entry["n"] == 1 and entry["dice"] == pytest.approx(1.0) and entry["hd95"] == pytest.approx(0.0), name
    big = shifted["abdomen"]["per_structure"]["liver"]
    assert big["hd95"] == pytest.approx(1.5) and 0.8 < big["dice"] < 1.0  # one voxel along x = 1.5 mm
    assert shifted["chest"]["per_structure"]["aorta"]["hd95"] == pytest.approx(1.5)


def test_random_tiny_model_end_to_end(cases):
    recipe = get_recipe("segvl", debug=True)
    torch.manual_seed(0)
    model = VisionLanguageModel(recipe.model)
    metrics = evaluate_real_masks(model, CONFIG, recipe.eval.sampler, real_dir=REAL, overlays=True)
    assert metrics["probe"] is None and model.training  # restored
    assert [f["caption"] for f in metrics.pop("overlays")] == ["zero-shot, real case chest", "zero-shot, real case abdomen"]
    for vid in ("chest", "abdomen"):
        case = metrics["zero_shot"][vid]
        scored = [e for e in case["per_structure"].values() if e["n"]]
        assert scored and all(0.0 <= e["dice"] <= 1.0 for e in scored)
    json.dumps(metrics)
    cfg = dataclasses.replace(recipe.eval, real_dir=str(REAL), tasks=("segmentation",))  # no seg_probe: no cache
    task = EXTRA_TASKS["real_masks"](model, SimpleNamespace(config=CONFIG), cfg, torch.device("cpu"))
    assert task["zero_shot"]["chest"]["per_structure"].keys() == {"aorta"}
