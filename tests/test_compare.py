"""`ctvlp compare` on a tiny synthetic cache (debug-size recipes, budgets of seconds), the cohort-size
variants of every recipe, and bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from ctvlp.cli import compare, main
from ctvlp.config import ConfigError
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe, list_recipes
from ctvlp.recipes.cohort import COHORT_MAX_SLICES, cohort_variant
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")

BUDGET = 0.05  # minutes per recipe: 2.55 s of training


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_synthetic_cache(tmp_path_factory.mktemp("compare"), 24, 3)


def _compare(cache: Path, out: Path, recipes: str, *extra: str) -> int:
    return main(["compare", "--recipes", recipes, "--data", str(cache), "--out", str(out), "--debug",
                 "--no-progress", "--budget-minutes", str(BUDGET), "--seed", "1", "--set", "data.num_workers=0",
                 *extra])


def test_compare_writes_table_and_json_within_budget(cache, tmp_path):
    out = tmp_path / "cmp"
    assert _compare(cache, out, "ctclip,sigvlp") == 0
    summary = json.loads((out / "compare.json").read_text())
    assert list(summary["recipes"]) == ["ctclip", "sigvlp"] and summary["seed"] == 1
    for name, r in summary["recipes"].items():
        assert r["status"] == "ok" and r["seed"] == 1 and r["budget_minutes"] == BUDGET
        assert r["command"].startswith(f"ctvlp compare --recipes {name} --data ") and "--debug" in r["command"]
        # steps come from the probe and the budget, not from the recipe (debug: 10)
        assert r["planned_steps"] == max(1, int(r["train_budget_seconds"] // r["probe_step_seconds"]))
        assert 1 <= r["steps"] <= r["planned_steps"]
        assert r["train_budget_seconds"] == pytest.approx(60 * BUDGET * (1 - compare.EVAL_RESERVE))
        assert r["train_seconds"] < r["train_budget_seconds"] + 2.0 and r["samples_per_s"] > 0
        m = r["metrics"]
        assert m["step"] == r["steps"] and 0 <= m["zeroshot"]["volume"]["mean_auroc"] <= 1
        assert (out / name / "run" / "metrics.jsonl").is_file() and (out / name / "config.yaml").is_file()
        assert list((out / name / "run" / "checkpoints").glob("step-*.pt")) and not (out / name / "probe").exists()
    lines = (out / "compare.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:4] == ["recipe", "steps", "samples/s", "zero-shot mean AUROC"] and header[-1] == "label F1"
    assert len(header) == 3 + len(compare.COLUMNS) and len(table) == 4
    for name, line in zip(["ctclip", "sigvlp"], table[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == name and cells[1] == str(summary["recipes"][name]["steps"])
        assert cells[header.index("BLEU-4")] == "—" and cells[header.index("R@5 r->v")] != "—"


def test_failed_recipe_is_recorded_and_budget_is_a_hard_stop(cache, tmp_path, monkeypatch):
    """A probe that under-estimates the step 1000x: max_minutes still stops training; a recipe that
    raises is recorded as failed and the next one runs; exit code 1."""
    def probe(cfg, cache_dir, out):
        if cfg.recipe == "ctclip":
            raise RuntimeError("probe broke | on purpose")
        return 1e-4

    monkeypatch.setattr(compare, "probe_step_seconds", probe)
    out = tmp_path / "cmp"
    assert _compare(cache, out, "ctclip,scalevlp") == 1
    recipes = json.loads((out / "compare.json").read_text())["recipes"]
    assert recipes["ctclip"]["status"] == "failed" and "probe broke" in recipes["ctclip"]["error"]
    ok = recipes["scalevlp"]
    assert ok["status"] == "ok" and ok["steps"] < ok["planned_steps"]  # stopped by the clock
    assert ok["train_seconds"] < ok["train_budget_seconds"] + 2.0
    md = (out / "compare.md").read_text()
    assert "| ctclip | failed: probe broke \\| on purpose |" in md and "| scalevlp | " in md


@pytest.mark.parametrize("name", list_recipes())
def test_cohort_variant_keeps_the_method_and_runs(name):
    paper, cfg = get_recipe(name), cohort_variant(get_recipe(name))
    demo = get_recipe("demo")
    assert cfg.loss == paper.loss and cfg.optim.name == paper.optim.name
    assert (cfg.data.sampler.mode, cfg.data.sampler.padding, cfg.data.sampler.text) == \
           (paper.data.sampler.mode, paper.data.sampler.padding, paper.data.sampler.text)
    assert cfg.model.vision.kind == paper.model.vision.kind
    if cfg.model.vision.kind == "ctvit":  # CTViT: the demo's width and patch, half its depth spatial, half temporal
        v = cfg.model.vision
        assert (v.spatial_depth + v.temporal_depth, v.width, v.patch) == \
               (demo.model.vision.depth, demo.model.vision.width, demo.model.vision.patch)
        assert v.image_size == (COHORT_MAX_SLICES, *demo.data.sampler.size) and v.codebook_size == 1024
        assert cfg.data.sampler.min_depth == cfg.eval.sampler.min_depth == COHORT_MAX_SLICES
        assert cfg.model.init_logit_scale == paper.model.init_logit_scale == 1.0
    else:
        assert cfg.model.vision.pos == paper.model.vision.pos and \
               cfg.model.vision.rope_base == paper.model.vision.rope_base
        assert (cfg.model.vision.width, cfg.model.vision.depth, cfg.model.vision.patch) == \
               (demo.model.vision.width, demo.model.vision.depth, demo.model.vision.patch)
    assert (cfg.model.image_pool, cfg.model.projection, cfg.model.text_input) == \
           (paper.model.image_pool, paper.model.projection, paper.model.text_input)
    assert cfg.data.sampler.size == demo.data.sampler.size and cfg.data.batch_size == demo.data.batch_size
    if paper.model.mae is not None:  # MAE's decoder stays lighter than the encoder
        assert cfg.model.mae.width == cfg.model.vision.width // 2 and cfg.model.mae.depth == paper.model.mae.depth
    assert cfg.model.text.name == "minilm" and cfg.model.text.freeze == "all"
    assert cfg.model.text.pooling == paper.model.text.pooling and cfg.eval.prompt_style == paper.eval.prompt_style
    assert cfg.eval.sampler.size == demo.data.sampler.size and cfg.eval.sampler.max_slices == COHORT_MAX_SLICES
    whole = cfg.data.sampler.mode == "whole"
    depth = COHORT_MAX_SLICES if whole else cfg.data.sampler.chunk_depth
    assert cfg.data.sampler.max_slices == (COHORT_MAX_SLICES if whole else None)
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg.model).eval()
    with torch.no_grad():  # the largest cohort input: a whole evaluation volume of COHORT_MAX_SLICES slices
        for d in {depth, COHORT_MAX_SLICES} if cfg.model.vision.kind != "ctvit" else {COHORT_MAX_SLICES}:
            emb = model.encode_image(torch.randn(2, cfg.model.vision.in_chans, d, *cfg.data.sampler.size))
            assert emb.shape == (2, cfg.model.embed_dim) and torch.isfinite(emb).all()


def test_unknown_recipe_is_a_config_error_listing_recipes():
    with pytest.raises(ConfigError, match="unknown recipe 'nope'; recipes: .*ctclip"):
        compare.resolve_config(compare.Run("nope", "nope"), argparse.Namespace(debug=False, overrides=[], seed=0))


def test_variants_and_fixed_steps(cache, tmp_path):
    """A --variant is a named row with its own overrides; --steps trains every run exactly that long."""
    out = tmp_path / "abl"
    spec = "ctclip-lr=ctclip optim.lr=0.002 'eval.prompt_style=report'"
    assert main(["compare", "--recipes", "ctclip", "--variant", spec, "--data", str(cache), "--out", str(out),
                 "--debug", "--no-progress", "--steps", "3", "--set", "data.num_workers=0"]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert summary["steps"] == 3 and summary["budget_minutes"] is None
    plain, variant = summary["recipes"]["ctclip"], summary["recipes"]["ctclip-lr"]
    assert plain["steps"] == variant["steps"] == 3 and plain["overrides"] == []
    assert variant["base_recipe"] == "ctclip" and variant["overrides"] == ["optim.lr=0.002", "eval.prompt_style=report"]
    assert variant["metrics"]["prompts"]["style"] == "report" and plain["metrics"]["prompts"]["style"] == "ctclip"
    configs = {n: (out / n / "config.yaml").read_text() for n in ("ctclip", "ctclip-lr")}
    assert "lr: 0.002" in configs["ctclip-lr"] and "lr: 0.002" not in configs["ctclip"]
    assert "max_minutes: 0.0" in configs["ctclip-lr"]  # no clock in --steps mode
    assert "--variant" in summary["command"] and "--steps 3" in summary["command"]
    assert "--variant" in variant["command"] and "--recipes" not in variant["command"]
    table = (out / "compare.md").read_text()
    assert "equal step count" in table and "| ctclip-lr | 3 |" in table
    assert "`ctclip-lr`: ctclip with `optim.lr=0.002 eval.prompt_style=report`" in table


@pytest.mark.parametrize("argv, message", [
    (["--recipes", "ctclip,nope"], "unknown recipe 'nope'; recipes:"),
    (["--recipes", " , "], "--recipes names no recipe"),
    (["--budget-minutes", "0"], "--budget-minutes must be > 0, got 0"),
    (["--budget-minutes", "-1"], "--budget-minutes must be > 0"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--variant", "ctclip"], 'expected "NAME=RECIPE KEY=VALUE ..."'),
    (["--variant", "a/b=ctclip"], 'expected "NAME=RECIPE KEY=VALUE ..."'),
    (["--variant", "sigvlp=ctclip"], "run names must be unique; repeated: sigvlp"),
    (["--variant", "x=ctclip optim.lrr=1"], "optim.lrr is not a config field"),
    (["--data", "/nonexistent/cache"], "not a cache folder"),
    (["--set", "optim.lrr=1"], "optim.lrr is not a config field"),
])
def test_bad_input_exits_2(cache, tmp_path, capsys, argv, message):
    args = {"--recipes": "ctclip,sigvlp", "--data": str(cache), "--out": str(tmp_path / "o"),
            "--budget-minutes": "1", **dict(zip(argv[::2], argv[1::2]))}
    assert main(["compare", "--debug", "--no-progress", *(x for kv in args.items() for x in kv)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


def test_resume_keeps_finished_runs_with_the_same_command(cache, tmp_path):
    out = tmp_path / "res"
    base = ["compare", "--data", str(cache), "--out", str(out), "--debug", "--no-progress", "--steps", "2",
            "--set", "data.num_workers=0"]
    assert main([*base, "--recipes", "ctclip"]) == 0
    first = json.loads((out / "compare.json").read_text())["recipes"]["ctclip"]
    checkpoint = next((out / "ctclip" / "run" / "checkpoints").iterdir())
    stamp = checkpoint.stat().st_mtime_ns
    assert main([*base, "--recipes", "ctclip,sigvlp", "--resume"]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert summary["recipes"]["ctclip"] == first and checkpoint.stat().st_mtime_ns == stamp  # not retrained
    assert summary["recipes"]["sigvlp"]["status"] == "ok" and "--resume" not in summary["command"]
    assert main([*base, "--recipes", "ctclip", "--resume", "--seed", "5"]) == 0  # another command: trained again
    again = json.loads((out / "compare.json").read_text())["recipes"]["ctclip"]
    assert again["seed"] == 5 and again["seconds"] != first["seconds"]
