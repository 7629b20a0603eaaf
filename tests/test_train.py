"""`ctvlp train` on a tiny synthetic cache: logs, checkpoints, exact resume, bad input, NaN steps, torchrun."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.models.store import list_checkpoints, load_checkpoint
from ctvlp.recipes import get_recipe, list_recipes
from ctvlp.train.loop import Trainer, TrainingError
from ctvlp.train.metrics_log import read_metrics
from conftest import make_synthetic_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_synthetic_cache(tmp_path_factory.mktemp("train"), 24, 3)


def _train(cache: Path, out: Path, *extra: str) -> int:
    return main(["train", "--recipe", "demo", "--debug", "--data", str(cache), "--out", str(out), "--no-progress",
                 "--no-eval", *extra])


def test_train_writes_logs_checkpoints_and_config(cache, tmp_path):
    out = tmp_path / "run"
    assert _train(cache, out, "--steps", "6", "--set", "log_every=2", "--set", "ckpt_every=2",
                  "--set", "keep_last=2") == 0
    records = read_metrics(out)
    assert [r["step"] for r in records] == [2, 4, 6]
    for r in records:
        assert {"step", "loss", "loss_sentence_sigmoid", "loss_siglip", "lr", "samples_per_s"} <= set(r)
        assert torch.isfinite(torch.tensor(r["loss"])) and r["samples_per_s"] > 0
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000004.pt", "step-0000006.pt"]
    assert list((out / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    state = load_checkpoint(out / "checkpoints" / "step-0000006.pt")
    assert state["config"]["steps"] == 6 and state["preprocess"]["spacing"] == [1.5, 1.5, 3.0]
    assert "tokenizer.json" in state["tokenizer"] and state["label_names"]
    assert "steps: 6" in (out / "config.yaml").read_text()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(cache, tmp_path, workers):
    full, part = tmp_path / "full", tmp_path / "part"
    opts = ("--steps", "6", "--set", "log_every=1", "--set", "ckpt_every=3", "--set", "keep_last=5",
            "--set", f"data.num_workers={workers}")
    assert _train(cache, full, *opts) == 0
    # A run that stopped after step 3: its checkpoint and its first three log lines.
    (part / "checkpoints").mkdir(parents=True)
    shutil.copy(full / "checkpoints" / "step-0000003.pt", part / "checkpoints")
    (part / "metrics.jsonl").write_text("".join(line + "\n" for line in
                                               (full / "metrics.jsonl").read_text().splitlines()[:3]))
    assert _train(cache, part, *opts, "--resume") == 0
    a, b = read_metrics(full), read_metrics(part)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in b] == [r["loss"] for r in a]  # bit-identical on the CPU
    sa = load_checkpoint(full / "checkpoints" / "step-0000006.pt")["model"]
    sb = load_checkpoint(part / "checkpoints" / "step-0000006.pt")["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("argv, message", [
    (["--recipe", "nope"], "invalid choice: 'nope' (choose from 'demo', 'ctclip'"),
    (["--set", "optim.lrr=1"], "optim.lrr is not a config field"),
    (["--set", "steps=many"], "is not a int"),
    (["--data", "/nonexistent/cache"], "not a cache folder"),
])
def test_bad_input_exits_2(cache, tmp_path, capsys, argv, message):
    base = {"--recipe": "demo", "--data": str(cache), "--out": str(tmp_path / "o")}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    base.pop("--set", None)
    args = ["train", "--debug", "--no-progress", "--no-eval"] + [x for kv in base.items() for x in kv]
    if "--set" in argv:
        args += ["--set", argv[argv.index("--set") + 1]]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_a_clear_error(cache, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "step-0000003.pt").write_bytes(b"not a checkpoint")
    assert _train(cache, out, "--steps", "4", "--resume") == 2
    err = capsys.readouterr().err
    assert "step-0000003.pt" in err and "corrupt" in err


def test_non_finite_losses_are_skipped_then_stop(cache, tmp_path, monkeypatch):
    cfg = get_recipe("demo", debug=True)
    trainer = Trainer(cfg, cache, tmp_path / "nan", progress=False)
    objective = trainer.objectives["pairs"]
    real = objective.forward
    calls = {"n": 0}

    def sometimes_nan(**kw):
        calls["n"] += 1
        parts = real(**kw)
        return {k: v * float("nan") for k, v in parts.items()} if calls["n"] in (2, 3) else parts

    objective.forward = sometimes_nan
    trainer.cfg.max_bad_steps = 2
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.fit()
    assert summary["bad_steps"] == 2 and summary["steps"] == cfg.steps
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    trainer2 = Trainer(cfg, cache, tmp_path / "nan2", progress=False)
    trainer2.objectives["pairs"].forward = lambda **kw: {k: v * float("nan") for k, v in real(**kw).items()}
    trainer2.cfg.max_bad_steps = 3
    with pytest.raises(TrainingError, match="4 steps with a non-finite loss"):
        trainer2.fit()


@pytest.mark.slow
def test_torchrun_two_processes(cache, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as s:  # a free port for the rendezvous (port 0 is not accepted by torchrun)
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "ctvlp", "train", "--recipe", "demo", "--debug", "--data", str(cache), "--out", str(out),
           "--steps", "4", "--set", "log_every=1", "--no-progress", "--no-eval"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(out)
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # rank 0 only: one line per step
    assert records[0]["samples_per_s"] > 0
    assert len(list_checkpoints(out / "checkpoints")) >= 1
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 4


@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_debug_variant_trains(cache, tmp_path, name):
    cfg = apply_overrides(get_recipe(name, debug=True), ["steps=2", "log_every=1"])
    trainer = Trainer(cfg, cache, tmp_path / name, progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert trainer.fit()["steps"] == 2
    records = read_metrics(tmp_path / name)
    assert [r["step"] for r in records] == [1, 2] and all(math.isfinite(r["loss"]) for r in records)
    assert f"loss_{cfg.loss.name}" in records[0]
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(before[k], v)]
    assert any(k.startswith("vision.") for k in changed) and any(k.startswith("text_proj.") for k in changed)


def test_resnet_tower_and_label_affinity_through_the_trainer(cache, tmp_path):
    """One config change swaps the ViT for MONAI's ResNet; SWCA's label affinity reads the batch labels."""
    cfg = apply_overrides(get_recipe("scalevlp", debug=True), [
        "steps=2", "log_every=1", "model.vision={kind: resnet, depth: 10, widths: [8, 8, 16, 16]}",
        "model.image_pool=mean", "loss.options={swca: {knowledge: labels, alpha: 0.5}}"])
    trainer = Trainer(cfg, cache, tmp_path / "resnet", progress=False)
    assert type(trainer.model.vision).__name__ == "ResNetTower3d"
    assert trainer.fit()["steps"] == 2
    records = read_metrics(tmp_path / "resnet")
    assert all(math.isfinite(r["loss_swca"]) for r in records)


@pytest.mark.parametrize("strip, overrides, message", [
    ("labels", ["loss.weights={masked_bce: 1.0}"], "needs labels for its masked_bce loss"),
    ("masks", ["loss.weights={tversky: 0.75}"], "needs masks for its tversky loss"),
    ("text", [], "needs report text for its sentence_sigmoid, siglip loss"),
])
def test_data_a_recipe_needs_is_checked_before_the_first_step(cache, tmp_path, capsys, strip, overrides, message):
    """A cache copied and stripped of labels, masks or report text: exit 2, nothing written to the run."""
    import pandas as pd

    from ctvlp.data.manifest import LABEL_PREFIX

    stripped = tmp_path / "cache"
    shutil.copytree(cache, stripped)
    for shard in (stripped / "index").glob("*.parquet"):
        index = pd.read_parquet(shard)
        if strip == "labels":
            index[[c for c in index if c.startswith(LABEL_PREFIX)]] = pd.NA
        elif strip == "masks":
            index["mask_names"] = json.dumps(["body"])
        else:
            index[["findings", "impressions"]] = ""
        index.to_parquet(shard)
    args = [f"--set={o}" for o in overrides]
    assert _train(stripped, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "datasets that provide" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_two_window_input_trains_and_mismatched_channels_are_refused(cache, tmp_path):
    """A lung window as a second input channel is three settings that must agree; one missing: refused."""
    windows = "[[-1000, 1000], [-1000, -500]]"
    sets = ["steps=2", "model.vision.in_chans=2", f"data.sampler.windows={windows}", f"eval.sampler.windows={windows}"]
    trainer = Trainer(apply_overrides(get_recipe("demo", debug=True), sets), cache, tmp_path / "w2", progress=False)
    assert trainer.fit()["steps"] == 2
    assert next(iter(trainer.loader))["image"].shape[1] == 2
    with pytest.raises(Exception, match="input channels disagree"):
        apply_overrides(get_recipe("demo", debug=True), sets[:3])


def test_wall_clock_budget_stops_early_and_saves(cache, tmp_path):
    """max_minutes tiny: the run stops after its first step, logs it and checkpoints it."""
    cfg = apply_overrides(get_recipe("demo", debug=True), ["steps=50", "max_minutes=0.0001", "ckpt_every=100"])
    result = Trainer(cfg, cache, tmp_path / "budget", progress=False).fit()
    assert result["steps"] == 1
    assert [r["step"] for r in read_metrics(tmp_path / "budget")] == [1]
    assert [p.name for p in list_checkpoints(tmp_path / "budget" / "checkpoints")] == ["step-0000001.pt"]


def _train_recipe(cache: Path, out: Path, recipe: str, *sets: str) -> int:
    return main(["train", "--recipe", recipe, "--debug", "--data", str(cache), "--out", str(out), "--no-progress",
                 "--no-eval", "--steps", "2", *[f"--set={s}" for s in sets]])


def test_mask_names_the_cache_lacks_stop_before_the_first_step(cache, tmp_path, capsys):
    """An organ mask no training volume has (or none of the names at all) would be 'unavailable'
    everywhere and its Tversky term 0: exit 2, one line naming it and listing the cache's masks, nothing
    trained. A finding mask exists only where the finding does: a cohort without one is warned about."""
    out = tmp_path / "run"
    assert _train_recipe(cache, out, "segvl", "data.sampler.mask_names=[lung, heart, pericardium]") == 2
    err = capsys.readouterr().err
    assert "['pericardium']" in err and "the cache's masks: [" in err and "'lung_nodule'" in err
    assert "heart'" not in err.split("the cache's masks")[0] and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()
    assert _train_recipe(cache, out, "segvl", "data.sampler.mask_names=[left_kidney_cyst]",
                         "tasks.masks.options={tversky: {alpha: 0.5, beta: 0.5}}") == 2
    assert "['left_kidney_cyst']" in capsys.readouterr().err
    with pytest.warns(UserWarning, match=r"finding masks \['renal_cyst'\]; they add no loss term"):
        assert _train_recipe(cache, tmp_path / "warned", "segvl", "data.sampler.mask_names=[lung, renal_cyst]",
                             "tasks.masks.options={tversky: {alpha: 0.5, beta: 0.5}}") == 0
    # SegVL's per-mask Tversky (alpha, beta) must follow the names: refused before step 1 too, then trains.
    assert _train_recipe(cache, tmp_path / "ok", "segvl", "data.sampler.mask_names=[lung, heart]") == 2
    assert "tasks.masks.options.tversky.alpha has 10 values, one per mask" in capsys.readouterr().err
    assert _train_recipe(cache, tmp_path / "ok", "segvl", "data.sampler.mask_names=[lung, heart]",
                         "tasks.masks.options={tversky: {alpha: 0.5, beta: 0.5}}") == 0


def test_frozen_prefixes_that_match_no_parameter_stop_before_the_first_step(cache, tmp_path, capsys):
    out = tmp_path / "run"
    stages = "stages=[{fraction: 0.5, frozen: [segg., seg.voxel.]}, {cycle: [pairs, masks], together: true}]"
    assert _train_recipe(cache, out, "segvl", stages) == 2
    err = capsys.readouterr().err
    assert "stages[0].frozen 'segg.' matches no parameter" in err and "seg.voxel." not in err
    assert "seg., " in err and "vision." in err and len(err.strip().splitlines()) == 1
    assert not (out / "metrics.jsonl").exists()
