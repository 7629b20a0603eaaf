"""Segmentation probe (eval/seg_probe.py): a head on tokens that carry the voxels learns an intensity-defined
structure (Dice near 1), the debug SegVL checkpoint trains and scores it with HD95, and the probe is
trained once per model; HD95 reaches the segmentation task's output."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache
from ctvlp.eval.suite import SuiteConfig, run_suite
from ctvlp.eval.seg_probe import evaluate_seg_probe, train_probe, trained_probe
from ctvlp.recipes import get_recipe
from ctvlp.train.loop import Trainer
from ctvlp.recipes.run import load_trained
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache(make_synthetic_cache(tmp_path_factory.mktemp("probe"), 16, 7))


class _PixelTower(nn.Module):
    """Tokens = the voxels of each 1 x 2 x 2 patch (z, y, x order, one channel): a per-token head sees
    every voxel's value, so a structure defined by intensity is learnable exactly."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(patch=(1, 2, 2))
        self.width = 4

    def forward(self, image, slice_mask=None):
        b, _, d, h, w = image.shape
        x = image[:, 0].reshape(b, d, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)  # (B, gz, gy, gx, 2, 2)
        return {"tokens": x.reshape(b, d * (h // 2) * (w // 2), 4), "grid": (d, h // 2, w // 2)}


class _PixelModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.vision = _PixelTower()


def test_probe_on_voxel_tokens_learns_bone_by_intensity(cache):
    recipe = get_recipe("segvl", debug=True)
    sampler = dataclasses.replace(recipe.eval.sampler, mask_names=("bone",))
    cfg = dataclasses.replace(recipe.eval, sampler=sampler, probe_steps=60, probe_lr=2e-2, probe_hidden=16,
                              task_volumes=2)
    model = _PixelModel()
    metrics = evaluate_seg_probe(model, cache, cfg)
    n_test = int((cache.index["split"] == "test").sum())
    assert list(metrics["per_structure"]) == ["bone"] and metrics["n_volumes"] == min(2, n_test)
    assert metrics["probe"]["loss_last"] < metrics["probe"]["loss_first"]
    tp = fp = fn = voxels = 0  # the best per-voxel rule here: an HU threshold (marrow overlaps soft tissue)
    for vid in cache.index[cache.index["split"] == "test"]["id"][:2]:
        volume = cache.volume(vid)
        hu, bone = volume.slab(0, volume.shape[0]), volume.mask_slab(0, volume.shape[0], ["bone"])[0]
        tp, fp, fn = tp + (bone & (hu > 150)).sum(), fp + (~bone & (hu > 150)).sum(), fn + (bone & (hu <= 150)).sum()
        voxels += bone.size
    threshold_dice = 2 * tp / (2 * tp + fp + fn)
    everything_dice = 2 * (tp + fn) / (voxels + tp + fn)  # every voxel predicted: 2 |G| / (|V| + |G|)
    dice = metrics["per_structure"]["bone"]["dice"]
    assert dice > 0.6 * threshold_dice and dice > 4 * everything_dice, (dice, threshold_dice, everything_dice)
    assert metrics["mean_hd95"] is not None and metrics["mean_hd95"] >= 0
    assert metrics["probe"]["parameters"] == (4 * 16 + 16) + (16 * 4 * 1 + 4)  # W1, b1, W2 (P=4, K=1), b2
    json.dumps(metrics)


def test_debug_checkpoint_probe_and_hd95_in_the_tasks(cache, tmp_path):
    cfg = apply_overrides(get_recipe("segvl", debug=True), ["steps=1"])
    Trainer(cfg, cache.root, tmp_path / "run", progress=False).fit()
    trained = load_trained(tmp_path / "run")
    evaluation = dataclasses.replace(trained.config.eval, tasks=("segmentation", "seg_probe"), probe_steps=3,
                                     task_volumes=2, overlays=1)
    frozen = {k: v.clone() for k, v in trained.model.state_dict().items()}
    result = run_suite(trained.model, cache, evaluation, SuiteConfig.after_training(evaluation))
    metrics, overlays = result.metrics, result.overlays  # the evaluator moves each task's overlays out of its metrics
    assert all(torch.equal(frozen[k], v) for k, v in trained.model.state_dict().items())  # the model is frozen
    seg, probe = metrics["segmentation"], metrics["seg_probe"]
    assert "mean_hd95" in seg and all("hd95" in e for e in seg["per_structure"].values())  # default on
    assert list(probe["per_structure"]) == list(evaluation.sampler.mask_names)
    assert probe["probe"]["steps"] == 3 and probe["n_volumes"] == seg["n_volumes"]
    assert [len(overlays["segmentation"]), len(overlays["seg_probe"])] == [1, 1]
    assert overlays["seg_probe"][0]["caption"].startswith("probe, test volume ")
    scored = [e for e in probe["per_structure"].values() if e["n"]]
    assert scored and all(0.0 <= e["dice"] <= 1.0 for e in scored)
    assert all(math.isfinite(e["hd95"]) for e in scored if e["n_hd95"])
    first = trained_probe(trained.model, cache, evaluation)
    assert trained_probe(trained.model, cache, evaluation) is first  # trained once per model and settings
    assert train_probe(trained.model, cache, evaluation).info["steps"] == 3
