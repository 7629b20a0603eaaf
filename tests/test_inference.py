"""`ctvlp.load_model`: the numbers of evaluation for a raw file, maps back on the input's grid, export."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ctvlp
from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.prompt_names import CORPUS
from ctvlp.data.sampling import SamplerConfig
from ctvlp.errors import InferenceError
from ctvlp.eval.generation import generate_reports
from ctvlp.eval.run import encode_split
from ctvlp.eval.suite import SuiteConfig, run_suite
from ctvlp.inference import CtvlpModel, export_model
from ctvlp.io.volume import Volume
from ctvlp.models.store import ModelSpec
from ctvlp.recipes import get_recipe
from ctvlp.train.loop import Trainer
from ctvlp.recipes.run import load_trained
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inference")
    cache = make_synthetic_cache(root, 12, 5)
    out = {"cache": cache}
    for recipe in ("demo", "segvl", "colipri"):
        Trainer(apply_overrides(get_recipe(recipe, debug=True), ["steps=1"]), cache, root / recipe, progress=False).fit()
        out[recipe] = root / recipe
    return out


def raw_file(cache: Cache, vid: str) -> str:
    """The NIfTI the synthetic cohort wrote for volume ``vid`` (prepare records it as source_path)."""
    return cache.volume(vid).meta["source_path"]


def test_encode_volume_of_the_raw_file_equals_evaluation_from_the_cache(runs):
    model = ctvlp.load_model(runs["demo"])
    cache = Cache(runs["cache"])
    config = dataclasses.replace(load_trained(runs["demo"]).config.eval, batch_size=4)  # evaluation batches by depth
    encoded = encode_split(model.model, cache, config, "test", torch.device("cpu"))
    assert len(encoded.ids) == 2
    for vid, reference in zip(encoded.ids, encoded.image_emb):
        mine = model.encode_volume(raw_file(cache, vid))
        assert mine.shape == reference.shape
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-6)  # float rounding of batched matmuls only
        assert torch.linalg.norm(mine).item() == pytest.approx(1.0, abs=1e-5)
    both = model.encode_volume(raw_file(cache, encoded.ids[0]), patches=True)
    torch.testing.assert_close(both.embedding, encoded.image_emb[0], rtol=0, atol=1e-6)
    assert both.patches.ndim == 4 and both.patch_mask.shape == both.patches.shape[:3] and both.patch_mask.any()


def test_zero_shot_gives_the_numbers_of_evaluate_model(runs):
    model = ctvlp.load_model(runs["demo"])
    cache = Cache(runs["cache"])
    config = dataclasses.replace(load_trained(runs["demo"]).config.eval, batch_size=4)
    evaluated = run_suite(model.model, cache, config, SuiteConfig.after_training(config))
    test, scores, labels = evaluated.test, evaluated.scores, evaluated.metrics["protocol"]["labels"]
    assert labels == model.spec.label_names
    # the demo's prompts are mined from its training reports and travel in the checkpoint
    assert config.prompt_style == CORPUS and set(model.model.prompts) == {CORPUS}
    assert model.model.prompts == Trainer(load_trained(runs["demo"]).config, runs["cache"], runs["demo"] / "again",
                                          progress=False).model.prompts
    for i, vid in enumerate(test.ids):
        probs = model.zero_shot(raw_file(cache, vid))
        assert list(probs) == labels
        # float32 rounding only: evaluation scores both volumes in one (2, D) @ (D, 2L) matmul
        np.testing.assert_allclose([probs[name] for name in labels], scores[i], rtol=0, atol=1e-6)
    two = model.zero_shot(raw_file(cache, test.ids[-1]), ["Emphysema", "Cardiomegaly"])
    assert list(two) == ["Emphysema", "Cardiomegaly"] and two["Emphysema"] == pytest.approx(probs["Emphysema"], abs=1e-6)  # prompts padded in another batch
    with pytest.raises(InferenceError, match="no labels"):
        model.zero_shot(raw_file(cache, test.ids[0]), [])


class VoxelProbe(torch.nn.Module):
    """A 'model' whose voxel embedding is the windowed HU (E = 1) and whose one anchor is +1: P = 1 where
    HU > 0 (window centre), 0 in air and soft tissue below 0 HU. Shows where the map lands in the world."""

    def __init__(self):
        super().__init__()
        self.cfg = SimpleNamespace(seg=object(), decoder=None)

    def encode_anchors(self, names):
        return torch.ones(len(names), 1)

    def image_features(self, image, slice_mask=None, voxels=False):
        return {"voxel_emb": image[:, :1]}


def lps_phantom(centre_mm: np.ndarray) -> Volume:
    """(48, 40, 30) voxels of 0.8 x 1.1 x 2.5 mm, LPS axes: air, a -100 HU body box, a 500 HU sphere
    of radius 6 mm around ``centre_mm`` (RAS world)."""
    affine = np.diag([-0.8, -1.1, 2.5, 1.0])
    affine[:3, 3] = [20.0, 25.0, -30.0]
    volume = Volume(np.full((48, 40, 30), -1000, np.int16), affine)
    ijk = np.stack(np.meshgrid(*map(np.arange, volume.shape), indexing="ij"), -1).reshape(-1, 3)
    world = volume.index_to_world(ijk).reshape(*volume.shape, 3)
    volume.array[4:44, 4:36, 2:28] = -100
    volume.array[np.linalg.norm(world - centre_mm, axis=-1) <= 6.0] = 500
    return volume


@pytest.mark.parametrize("sampler", [SamplerConfig(mode="whole", size=(24, 40)),  # crops y, pads x
                                     SamplerConfig(mode="chunk", chunk_depth=4)],  # several z windows
                         ids=["whole-crop-pad", "chunk-windows"])
def test_segment_map_lands_on_the_structure_in_world_mm(sampler):
    centre = np.array([4.0, 6.0, 1.0])  # RAS mm, inside the body box, off the grid's centre
    volume = lps_phantom(centre)
    assert volume.orientation == "LPS"
    spec = ModelSpec(preprocess=PreprocessConfig(), sampler=sampler, prompt_style="ctclip", label_names=[],
                     recipe="probe", step=0, path="probe")
    maps = CtvlpModel(VoxelProbe(), spec).segment(volume, ["sphere"])
    heat = maps["sphere"]
    assert heat.shape == volume.shape and np.array_equal(heat.affine, volume.affine)
    assert heat.array.dtype == np.float32 and heat.array.min() >= 0 and heat.array.max() <= 1
    ijk = np.stack(np.nonzero(heat.array > 0), -1)
    weights = heat.array[heat.array > 0]
    centre_of_mass = (volume.index_to_world(ijk) * weights[:, None]).sum(0) / weights.sum()
    np.testing.assert_allclose(centre_of_mass, centre, atol=1.0)
    assert heat.array[0, 0, 0] == 0 and heat.array[-1, -1, -1] == 0  # air, cropped away: outside the view


def test_segment_with_a_trained_voxel_head_and_the_errors(runs):
    model = ctvlp.load_model(runs["segvl"])
    path = raw_file(Cache(runs["cache"]), "valid_1_a_1")
    volume = ctvlp.load_volume(path)
    maps = model.segment(path, ["aorta", "lung"])
    assert list(maps) == ["aorta", "lung"]
    for heat in maps.values():
        assert heat.shape == volume.shape and np.array_equal(heat.affine, volume.affine)
        assert 0 <= heat.array.min() and heat.array.max() <= 1 and heat.array.max() > 0
    assert not np.array_equal(maps["aorta"].array, maps["lung"].array)
    with pytest.raises(InferenceError, match="no prompts"):
        model.segment(path, [])
    with pytest.raises(InferenceError, match="has no voxel head"):
        ctvlp.load_model(runs["demo"]).segment(path, ["aorta"])
    with pytest.raises(InferenceError, match="has no report decoder"):
        model.generate_report(path)


def test_generate_report_is_what_evaluation_generates(runs):
    model = ctvlp.load_model(runs["colipri"])
    cache = Cache(runs["cache"])
    ids, generated, _ = generate_reports(model.model, cache, model.spec.sampler, "test", max_new_tokens=12,
                                         batch_size=1)
    for vid, text in zip(ids, generated):
        assert model.generate_report(raw_file(cache, vid), max_new_tokens=12) == text


def test_export_loads_offline_and_gives_the_same_outputs(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    original = ctvlp.load_model(runs["segvl"])
    folder = export_model(original, tmp_path / "export")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "text"}
    exported = ctvlp.load_model(folder)
    assert exported.spec.label_names == original.spec.label_names and exported.spec.sampler == original.spec.sampler
    assert exported.spec.preprocess == original.spec.preprocess
    path = raw_file(Cache(runs["cache"]), "valid_1_a_2")
    assert torch.equal(exported.encode_volume(path), original.encode_volume(path))
    assert exported.zero_shot(path) == original.zero_shot(path)
    assert torch.equal(exported.encode_text(["No effusion."]), original.encode_text(["No effusion."]))
    np.testing.assert_array_equal(exported.segment(path, ["aorta"])["aorta"].array,
                                  original.segment(path, ["aorta"])["aorta"].array)


def test_export_carries_the_mined_prompts(runs, tmp_path):
    original = ctvlp.load_model(runs["demo"])
    exported = ctvlp.load_model(export_model(original, tmp_path / "export"))
    assert exported.model.prompts == original.model.prompts and CORPUS in exported.model.prompts
    path = raw_file(Cache(runs["cache"]), "valid_1_a_2")
    assert exported.zero_shot(path) == original.zero_shot(path)
