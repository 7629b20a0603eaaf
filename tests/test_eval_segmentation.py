"""Zero-shot segmentation evaluation (eval/segmentation.py): windows, Dice/HD95 on hand-made masks, a fake
model whose voxel embeddings reproduce a known mask (exact Dice values, availability, padding), and an
end-to-end run of the debug SegVL and Uniferum models on a tiny synthetic cache."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from ctvlp.data.cache import Cache
from ctvlp.data.sampling import SamplerConfig
from ctvlp.data.sampling import volume_windows
from ctvlp.eval.segmentation import anchor_predictor, evaluate_segmentation, segment_volumes, structure_scores
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe
from ctvlp.recipes.segvl import SEGVL_MASKS
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- windows ------------------------------------------------------------------------------------

def test_windows_cover_every_slice_once_the_last_moved_to_the_end():
    assert volume_windows(10, 4) == [(0, 4), (4, 8), (6, 10)]
    assert volume_windows(8, 4) == [(0, 4), (4, 8)]
    assert volume_windows(3, 4) == [(0, 3)]
    assert volume_windows(7, None) == [(0, 7)]


# ---- metric on hand-made masks ------------------------------------------------------------------

def _box(shape, z, y, x) -> torch.Tensor:
    out = torch.zeros(shape, dtype=torch.bool)
    out[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return out


def test_structure_scores_golden_dice_availability_and_empty_conventions():
    shape = (4, 6, 6)
    target = torch.stack([_box(shape, (0, 4), (0, 4), (0, 6)),   # exact
                          _box(shape, (0, 4), (0, 4), (0, 6)),   # half of the target predicted
                          torch.zeros(shape, dtype=torch.bool),  # annotated, empty, predicted empty
                          torch.zeros(shape, dtype=torch.bool),  # annotated, empty, something predicted
                          _box(shape, (0, 4), (0, 4), (0, 6))])  # not annotated
    pred = torch.stack([target[0], _box(shape, (0, 4), (0, 2), (0, 6)), target[2],
                        _box(shape, (0, 1), (0, 1), (0, 1)), target[4]])
    available = [True, True, True, True, False]
    skip = structure_scores(pred, target, available)
    assert skip[0]["dice"] == pytest.approx(1.0)
    assert skip[1]["dice"] == pytest.approx(2 * 48 / (96 + 48))  # 2|P n G| / (|P| + |G|) = 2/3
    assert skip[2]["dice"] is None and skip[3]["dice"] is None and skip[2]["empty"] and skip[3]["empty"]
    assert skip[4] == {"dice": None, "hd95": None, "empty": None}
    count = structure_scores(pred, target, available, ignore_empty=False)
    assert count[2]["dice"] == pytest.approx(1.0) and count[3]["dice"] == pytest.approx(0.0)
    assert count[4]["dice"] is None


def test_hd95_in_millimetres_and_undefined_when_a_mask_is_empty():
    shape = (1, 1, 8)
    pred = _box(shape, (0, 1), (0, 1), (0, 1))[None]
    target = _box(shape, (0, 1), (0, 1), (3, 4))[None]
    out = structure_scores(pred, target, [True], spacing=(3.0, 1.5, 2.0), hd95=True)
    assert out[0]["hd95"] == pytest.approx(6.0)  # 3 voxels along x at 2 mm
    assert out[0]["dice"] == pytest.approx(0.0)
    assert structure_scores(torch.zeros_like(pred), target, [True], hd95=True)[0]["hd95"] is None
    assert structure_scores(pred, target, [True])[0]["hd95"] is None  # not asked for


# ---- a fake model on a fake cache: exact values --------------------------------------------------

class _Volume:
    def __init__(self, vid: str, masks: dict[str, np.ndarray], inside: str = "A"):
        self.vid = vid
        self._masks = masks
        self.mask_names = list(masks)
        self.shape = masks[inside].shape
        self.spacing_zyx = np.array([3.0, 1.5, 1.5])
        self.z_extents = {}
        self._hu = np.where(masks[inside], 1000, -1000).astype(np.int16)  # bright exactly inside A

    def slab(self, z0, z1):
        return self._hu[z0:z1].copy()

    def mask_slab(self, z0, z1, names=None):
        names = self.mask_names if names is None else list(names)
        return np.stack([self._masks[n][z0:z1] for n in names])


class _Cache:
    def __init__(self, volumes: list[_Volume], split: str = "test"):
        self.root = Path("fake")
        self.config = SimpleNamespace(hu_window=(-1000.0, 1000.0))
        self._volumes = {v.vid: v for v in volumes}
        self.index = pd.DataFrame({"id": [v.vid for v in volumes], "split": split})

    def volume(self, vid):
        return self._volumes[vid]


class _FakeSegModel(nn.Module):
    """Voxel embedding (E = 1) = the image's first channel (+1 inside A, -1 elsewhere), and +1 on every
    padding slice (so counting a padding slice would add false positives); every anchor is (1,), so every
    structure is predicted as A exactly."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(seg=object())
        self.anchor_calls = 0
        self.modes = []

    def encode_anchors(self, names):
        self.anchor_calls += 1
        return torch.ones(len(names), 1)

    def image_features(self, image, slice_mask=None, voxels=False):
        assert voxels
        self.modes.append(self.training)
        emb = image[:, :1].clone()  # (B, 1, D, H, W)
        emb[:, 0][~slice_mask.bool()] = 1.0  # (B, D) selects whole padding slices
        return {"voxel_emb": emb}


def _fake_cache(split: str = "test") -> _Cache:
    z, y, x = 10, 8, 8
    rows = np.zeros((z, y, x), bool)
    a = rows.copy(); a[:, 0:4] = True          # rows 0-3
    b = rows.copy(); b[:, 2:6] = True          # rows 2-5: |A n B| = |A| / 2 -> Dice 0.5
    one = _Volume("v1", {"body": np.ones((z, y, x), bool), "A": a, "B": b, "C": rows.copy()})
    a2 = np.zeros((3, y, x), bool); a2[:, 0:2] = True
    two = _Volume("v2", {"body": np.ones((3, y, x), bool), "A": a2})  # B, C not annotated
    return _Cache([one, two], split)


@pytest.mark.parametrize("sampler", [
    SamplerConfig(mode="chunk", chunk_depth=4, padding="zero", size=(10, 10), text="report"),
    SamplerConfig(mode="chunk", chunk_depth=4, padding="repeat", text="report"),
    SamplerConfig(mode="whole", padding="repeat", text="report"),
    SamplerConfig(mode="whole", max_slices=6, padding="zero", text="report"),
], ids=["chunk-zero-pad-inplane", "chunk-repeat", "whole", "whole-windows"])
def test_fake_model_reproducing_a_mask_gives_exact_dice(sampler):
    model = _FakeSegModel()
    metrics = evaluate_segmentation(model, _fake_cache(), sampler, "test", batch_size=2)
    per = metrics["per_structure"]
    assert list(per) == ["A", "B", "C"]  # default: every mask but body, first seen first
    assert per["A"]["dice"] == pytest.approx(1.0) and per["A"]["n"] == 2
    assert per["B"]["dice"] == pytest.approx(0.5) and per["B"]["n"] == 1 and per["B"]["n_unannotated"] == 1
    assert per["C"] == {"dice": None, "n": 0, "n_unannotated": 1, "n_empty": 1}  # empty reference: skipped
    assert metrics["mean_dice"] == pytest.approx(0.75)
    assert metrics["n_volumes"] == 2 and metrics["threshold"] == 0.5
    assert model.anchor_calls == 1  # every name encoded once
    assert model.modes and not any(model.modes) and model.training  # eval mode inside, restored after
    json.dumps(metrics)


def test_empty_reference_counts_with_ignore_empty_false_and_names_and_limits_apply():
    model = _FakeSegModel()
    sampler = SamplerConfig(mode="whole", text="report")
    metrics = evaluate_segmentation(model, _fake_cache(), sampler, "test", ignore_empty=False)
    assert metrics["per_structure"]["C"]["dice"] == pytest.approx(0.0)  # A predicted where nothing is
    assert metrics["mean_dice"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    only = evaluate_segmentation(model, _fake_cache(), sampler, "test", mask_names=["B", "missing"], max_volumes=1)
    assert list(only["per_structure"]) == ["B", "missing"] and only["n_volumes"] == 1
    assert only["per_structure"]["missing"]["n"] == 0 and only["mean_dice"] == pytest.approx(0.5)
    named = SamplerConfig(mode="whole", text="report", mask_names=("A",))
    assert list(evaluate_segmentation(model, _fake_cache(), named, "test")["per_structure"]) == ["A"]
    high = evaluate_segmentation(model, _fake_cache(), sampler, "test", threshold=0.99, mask_names=["A"])
    assert high["per_structure"]["A"]["dice"] == pytest.approx(1.0)  # P is exactly 1 inside, 0 outside


def test_on_volume_sees_each_stitched_volume_once_and_overlays_are_drawn():
    seen = {}

    def on_volume(vid, image, pred, target, spacing):
        assert vid not in seen
        seen[vid] = (image, pred, target, list(spacing))

    cache = _fake_cache()
    sampler = SamplerConfig(mode="chunk", chunk_depth=4, padding="zero", text="report")
    predict = anchor_predictor(_FakeSegModel(), ["A", "B"], 0.5, torch.device("cpu"))
    scores = segment_volumes(predict, {vid: cache.volume(vid) for vid in ("v1", "v2")}, sampler, ["A", "B"],
                             (-1000.0, 1000.0), 2, on_volume=on_volume)
    assert set(seen) == set(scores) == {"v1", "v2"}
    for vid in ("v1", "v2"):
        image, pred, target, spacing = seen[vid]
        a = cache.volume(vid)._masks["A"]
        assert image.shape == a.shape and pred.shape == target.shape == (2, *a.shape)  # real slices only
        assert torch.equal(image > 0, torch.from_numpy(a)) and torch.equal(pred[0], target[0])
        assert spacing == [3.0, 1.5, 1.5]
    metrics = evaluate_segmentation(_FakeSegModel(), cache, sampler, "test", overlays=1)
    assert len(metrics["overlays"]) == 1 and metrics["overlays"][0]["caption"].startswith("zero-shot, test volume v")
    assert base64.b64decode(metrics["overlays"][0]["png_base64"])[:4] == b"\x89PNG"
    assert "overlays" not in evaluate_segmentation(_FakeSegModel(), cache, sampler, "test")


def test_model_without_voxel_head_and_bad_split_are_clear_errors():
    plain = _FakeSegModel()
    plain.cfg = SimpleNamespace(seg=None)
    with pytest.raises(ValueError, match=r"model\.seg.*segvl|segvl.*model\.seg"):
        evaluate_segmentation(plain, _fake_cache(), SamplerConfig(text="report"), "test")
    with pytest.raises(Exception, match="split 'valid' has no volumes"):
        evaluate_segmentation(_FakeSegModel(), _fake_cache(), SamplerConfig(text="report"), "valid")


# ---- end to end: debug models on a synthetic cache ---------------------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache(make_synthetic_cache(tmp_path_factory.mktemp("segeval"), 16, 5))


@pytest.mark.parametrize("recipe", ["segvl", "uniferum"])
def test_debug_model_on_synthetic_cache_gives_finite_dice(cache, recipe):
    cfg = get_recipe(recipe, debug=True)
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg.model)
    model.train()
    metrics = evaluate_segmentation(model, cache, cfg.data.sampler, "test", hd95=True)
    assert model.training  # restored
    assert list(metrics["per_structure"]) == list(SEGVL_MASKS)
    assert metrics["n_volumes"] == int((cache.index["split"] == "test").sum())
    assert 0.0 <= metrics["mean_dice"] <= 1.0
    scored = [e for e in metrics["per_structure"].values() if e["n"]]
    assert scored and all(0.0 <= e["dice"] <= 1.0 for e in scored)
    assert all(math.isfinite(e["hd95"]) for e in scored if e["n_hd95"])
    json.dumps(metrics)
