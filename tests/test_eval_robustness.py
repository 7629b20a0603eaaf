"""Slice-count robustness (eval/robustness.py): the sampler rule (n centred slices padded to D), and a
debug checkpoint evaluated over a grid, with the depths and real slices the model saw recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache
from ctvlp.data.loader import split_dataset
from ctvlp.data.manifest import label_names_of
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.config import EvalConfig
from ctvlp.eval.probe import Split, linear_probe
from ctvlp.eval.robustness import evaluate_robustness, robustness_sampler, tower_min_depth
from ctvlp.eval.run import encode_split
from ctvlp.eval.suite import SuiteConfig, evaluate_cell, run_suite
from ctvlp.recipes import get_recipe, list_recipes
from ctvlp.recipes.cohort import cohort_variant
from ctvlp.train.loop import Trainer
from ctvlp.recipes.run import load_trained
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sampler_rule_caps_at_max_slices_and_all_keeps_the_eval_sampler():
    base = SamplerConfig(mode="whole", max_slices=16, text="report")
    assert robustness_sampler(base, 4, "zero", 8) == dataclasses.replace(base, max_slices=4, padding="zero", min_depth=8)
    assert robustness_sampler(base, 64, "repeat", 8).max_slices == 16  # never more than the eval reads
    assert robustness_sampler(base, 0, "repeat", 8).max_slices == 16  # 0: all
    assert robustness_sampler(SamplerConfig(mode="whole"), 0, "zero", 4).max_slices is None
    with pytest.raises(ValueError, match="whole"):
        robustness_sampler(SamplerConfig(mode="chunk"), 4, "zero", 8)
    with pytest.raises(ValueError):
        EvalConfig(robustness_paddings=("edge",))
    with pytest.raises(ValueError):
        EvalConfig(robustness_counts=(4, 4))


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_variant_states_d_as_the_chunk_depth_it_trains_on(name):
    for cfg in (get_recipe(name), get_recipe(name, debug=True), cohort_variant(get_recipe(name))):
        sampler = cfg.data.sampler
        assert cfg.eval.robustness_depth == (sampler.chunk_depth if sampler.mode == "chunk" else None)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_synthetic_cache(tmp_path_factory.mktemp("robust"), 16, 3)


def _trained(cache: Path, out: Path, recipe: str):
    cfg = apply_overrides(get_recipe(recipe, debug=True), ["steps=1"])
    Trainer(cfg, cache, out, progress=False).fit()
    return load_trained(out)


def _spy(model) -> list[tuple[int, list[int]]]:
    """Record (depth, real slices per volume) of every encode_image call."""
    seen, encode = [], model.encode_image

    def wrapped(image, slice_mask=None, **kw):
        seen.append((int(image.shape[2]), slice_mask.sum(1).tolist()))
        return encode(image, slice_mask, **kw)

    model.encode_image = wrapped
    return seen


def test_chunk_trained_model_pads_n_centred_slices_to_its_chunk_depth(cache, tmp_path):
    trained = _trained(cache, tmp_path / "run", "sigvlp")  # debug: trained on 8-slice chunks
    cfg = dataclasses.replace(trained.config.eval, robustness_counts=(0, 4, 1), tasks=("robustness",),
                              robustness_probe=False)  # the probe's own encodes would shift the counts below
    assert cfg.robustness_depth == 8 == trained.config.data.sampler.chunk_depth
    seen = _spy(trained.model)
    metrics = run_suite(trained.model, Cache(cache), cfg, SuiteConfig.after_training(cfg)).metrics["robustness"]
    assert metrics["counts"] == ["all", 4, 1] and metrics["paddings"] == ["repeat", "zero"] and metrics["depth"] == 8
    assert list(metrics["results"]) == ["all/repeat", "all/zero", "4/repeat", "4/zero", "1/repeat", "1/zero"]
    assert [(r["n"], r["padding"], r["max_slices"]) for r in metrics["summary"]] == [
        ("all", "repeat", 16), ("all", "zero", 16), (4, "repeat", 4), (4, "zero", 4), (1, "repeat", 1), (1, "zero", 1)]
    for row in metrics["summary"]:
        assert 0.0 <= row["r5_volume_to_report"] <= 1.0 and 0.0 <= row["r5_report_to_volume"] <= 1.0
    # batches: evaluation batches equal depths only, so an n-slice cell (every input D deep) has
    # ceil(N / batch) per split, while the baseline and the "all" cells have one more per distinct depth
    n_batches = sum(-(-len(split_dataset(Cache(cache), cfg.sampler, s, 0)) // cfg.batch_size)
                    for s in (cfg.val_split, cfg.test_split))
    per_all = (len(seen) - 4 * n_batches) // 3
    sizes = [per_all] * 3 + [n_batches] * 4  # baseline, all/repeat, all/zero, then the four n-slice cells
    starts = np.cumsum([0, *sizes])
    assert starts[-1] == len(seen)
    cells = [seen[starts[i]:starts[i + 1]] for i in range(1, 7)]
    for (n, _), cell in zip([(None, "r"), (None, "z"), (4, "r"), (4, "z"), (1, "r"), (1, "z")], cells):
        for depth, real in cell:
            if n is None:
                assert depth >= 8 and all(r <= 16 for r in real)  # all slices the sampler keeps (max 16)
            else:
                assert depth == 8 and set(real) == {n}  # n real slices, padded to D = 8
    json.dumps(metrics)
    # the grid's "all" cells are the one evaluator itself (a cell without the repeated tasks) when every volume is deeper than D
    base = evaluate_cell(trained.model, Cache(cache), dataclasses.replace(cfg, tasks=()))[0]
    assert metrics["results"]["all/repeat"]["zeroshot"]["volume"]["mean_auroc"] == \
        pytest.approx(base["zeroshot"]["volume"]["mean_auroc"])


def test_probe_fitted_once_on_whole_volumes_and_organs_on_n_slice_chunks(cache, tmp_path):
    trained = _trained(cache, tmp_path / "run", "sigvlp")
    cfg = dataclasses.replace(trained.config.eval, robustness_counts=(0, 1), robustness_paddings=("repeat",),
                              tasks=("robustness", "organs"), probe_split="train")
    data = Cache(cache)
    metrics = run_suite(trained.model, data, cfg, SuiteConfig.after_training(cfg)).metrics["robustness"]
    assert metrics["tasks"] == ["organs"]
    cells = metrics["results"]
    assert cells["all/repeat"]["organs"]["chunk_depth"] == cfg.organ_chunk_depth
    assert cells["1/repeat"]["organs"]["chunk_depth"] == 1
    # the "all" cell's probe is the suite's linear probe: same fit (train, C on valid), same test embeddings
    splits = [encode_split(trained.model, data, cfg, s, torch.device("cpu")) for s in ("train", "valid", "test")]
    expected = linear_probe(*(Split(e.image_emb.numpy(), e.labels, e.available) for e in splits),
                            label_names_of(data.index.columns))
    got = cells["all/repeat"]["probe"]
    assert expected["labels_in_mean"] and {n: expected["per_label"][n]["auroc"] for n in expected["labels_in_mean"]} \
        == pytest.approx({n: v for n, v in got["per_label"].items() if v is not None})
    assert got["mean_auroc"] == pytest.approx(expected["mean_auroc"])
    assert cells["1/repeat"]["probe"]["per_label"].keys() == got["per_label"].keys()  # the same probes, not refitted per cell
    for row in metrics["summary"]:
        assert 0.0 <= row["probe_auroc"] <= 1.0 and "organ_auroc" in row


def test_whole_volume_model_uses_the_tower_depth_and_repeats_segmentation(cache, tmp_path):
    trained = _trained(cache, tmp_path / "run", "segvl")
    cfg = dataclasses.replace(trained.config.eval, robustness_counts=(1,), robustness_paddings=("zero",),
                              task_volumes=2, overlays=1)
    assert cfg.robustness_depth is None and tower_min_depth(trained.model) == 4  # debug ViT: 4 x 8 x 8 patches
    metrics = evaluate_robustness(trained.model, Cache(cache), cfg, evaluate_cell)
    assert metrics["depth"] == 4 and metrics["tasks"] == ["segmentation"] and "tower" in metrics["depth_rule"]
    cell = metrics["results"]["1/zero"]
    assert cell["segmentation"]["n_volumes"] == 2 and "mean_dice" in metrics["summary"][0]
    assert "overlays" not in cell["segmentation"]  # figures are drawn by the segmentation task, not per cell
