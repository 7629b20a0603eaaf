"""Each recipe is evaluated as its paper evaluates it (issue 17, item 6): its eval tasks are the ones its
paper table needs, and `ctvlp eval` on its checkpoint fills that table (``paper_rows``) by default."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.eval.names import CORE_TASKS, EVAL_TASKS
from ctvlp.eval.paper import PAPER_TABLES, paper_rows, paper_tasks
from ctvlp.recipes import NAMES, get_recipe
from ctvlp.recipes.cohort import COHORT_DROPPED_TASKS, cohort_variant
from ctvlp.train.loop import Trainer
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")

PAPERS = {  # what each paper's evaluation section reports (METHODS.md, ../shared/seeds), as tasks
    "ctclip": set(),  # zero-shot classification and retrieval: core tasks
    "sigvlp": {"organs", "seg_probe", "robustness"},  # organ classification, segmentation probing, slice counts
    "scalevlp": {"generation_probe"},  # report generation from a decoder on the frozen encoder
    "segvl": {"segmentation", "seg_probe"},  # zero-shot segmentation, segmentation by linear probing
    "uniferum": {"segmentation"},  # masks as prompts
    "colipri": {"generation", "seg_probe"},  # its own decoder's reports, segmentation on the frozen encoder
    "demo": set(),
}


@pytest.mark.parametrize("name", NAMES)
def test_each_recipe_evaluates_its_papers_tasks_at_every_size(name):
    """The recipe's eval.tasks are its paper's (and what its table rows read); debug and cohort variants keep them."""
    assert set(paper_tasks(name)) == PAPERS[name]
    for cfg in (get_recipe(name), get_recipe(name, debug=True)):
        assert set(cfg.eval.tasks) == PAPERS[name], cfg.recipe
    # compare's cohort runs leave the costly ones to `ctvlp eval`, whose default adds them back
    assert set(cohort_variant(get_recipe(name)).eval.tasks) == PAPERS[name] - set(COHORT_DROPPED_TASKS)
    source, rows = PAPER_TABLES[name]
    assert source and rows
    for row in rows:  # every row reads a task the recipe runs, or says why it is not computed
        assert (row.task in (*CORE_TASKS, *get_recipe(name).eval.tasks)) if row.key else row.note
    assert set(paper_tasks(name)) <= set(EVAL_TASKS)


def test_scalevlp_rows_are_its_abstracts_numbers():
    rows = {r.name: r for r in PAPER_TABLES["scalevlp"][1]}
    bert = rows["report generation BERT-F1 (BERTScore, MiniLM layer 6, not the paper's model)"]
    assert rows["report generation ROUGE-L"].paper == "0.44" and bert.paper == "0.89"
    assert bert.key == "generation_probe.bertscore_f1" and "MiniLM" in bert.note and "roberta-large" in bert.note
    assert {f"CT->report R@{k}" for k in (1, 5, 10)} | {f"report->CT R@{k}" for k in (1, 5, 10)} <= set(rows)
    assert rows["zero-shot transfer to BIMCV-R"].key is None


def test_paper_rows_read_values_and_say_what_is_not_computed():
    metrics = {"zeroshot": {"volume": {"mean_auroc": 0.7, "mean_f1": 0.6, "mean_precision": 0.3}},
               "retrieval": {"volume": {"volume_to_report": {"recall@1": 0.1, "recall@5": 0.2, "recall@10": 0.3},
                                        "report_to_volume": {"recall@1": 0.15, "recall@5": 0.25, "recall@10": 0.35}}},
               "probe": {"mean_auroc": 0.8}}  # generation_probe not run
    table = paper_rows("scalevlp", metrics)
    by = {r["row"]: r for r in table["rows"]}
    assert by["CT->report R@1"]["value"] == 0.1 and by["report->CT R@10"]["value"] == 0.35
    assert by["abnormality classification AUROC (linear probe)"]["value"] == 0.8
    rouge = by["report generation ROUGE-L"]
    assert rouge["value"] is None and rouge["paper"] == "0.44"
    assert "'generation_probe' was not run" in rouge["not_computed"]
    assert "BIMCV-R" in by["zero-shot transfer to BIMCV-R"]["not_computed"]
    robust = {"robustness": {"summary": [{"n": "all", "padding": "repeat", "mean_auroc": 0.7},
                                         {"n": 4, "padding": "zero", "mean_auroc": 0.1},
                                         {"n": 4, "padding": "repeat", "mean_auroc": 0.6}]}}
    sig = {r["row"]: r for r in paper_rows("sigvlp", {**metrics, **robust})["rows"]}
    assert sig["zero-shot AUROC, all slices (repeat padding)"]["value"] == 0.7
    assert sig["zero-shot AUROC, 4 slices (repeat padding)"]["value"] == 0.6  # the repeat cell, not the zero one
    assert [r for r in sig if "slices" in r] == ["zero-shot AUROC, all slices (repeat padding)",
                                                 "zero-shot AUROC, 4 slices (repeat padding)"]  # the run's cells
    unrun = {r["row"]: r for r in paper_rows("sigvlp", metrics)["rows"]}
    assert "'robustness' was not run" in unrun["zero-shot AUROC per slice count (repeat padding)"]["not_computed"]
    assert paper_rows("custom", metrics) == {"recipe": "custom", "source": "no paper table for recipe 'custom'",
                                             "rows": []}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_synthetic_cache(tmp_path_factory.mktemp("papereval"), 12, 5)


@pytest.mark.parametrize("name", ["scalevlp", "segvl"])
def test_ctvlp_eval_runs_the_papers_tasks_and_writes_its_rows_by_default(cache, tmp_path, capsys, name):
    """A 2-step debug checkpoint, `ctvlp eval` without --tasks: the recipe's tasks run and its table is filled."""
    torch.manual_seed(0)
    # segvl's checkpoint carries no eval tasks (as an older one): `ctvlp eval` adds its paper's
    overrides = ["steps=2"] + (["eval.tasks=[]"] if name == "segvl" else [])
    Trainer(apply_overrides(get_recipe(name, debug=True), overrides), cache, tmp_path / "run", progress=False).fit()
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(cache), "--out", str(out),
                 "--bootstrap", "0", "--no-progress", "--overlays", "0"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"] == [*CORE_TASKS, *get_recipe(name).eval.tasks]
    table = metrics["paper_rows"]
    assert table["recipe"] == name and len(table["rows"]) == len(PAPER_TABLES[name][1])
    for row in table["rows"]:
        if row["key"] is None:
            assert row["value"] is None and row["not_computed"]
        elif row["key"].split(".")[0] in ("zeroshot", "probe") or row["key"].endswith("mean_dice"):
            assert "not_computed" not in row  # may be null: a 2-step model can leave every label one-class
        else:
            assert row["value"] is not None and 0.0 <= row["value"] <= 1.0, row
    assert f"paper table ({name}):" in printed and (out / "paper_rows.csv").exists()
    assert "The paper's table" in (out / "report.html").read_text()
    if name == "scalevlp":
        gen = metrics["generation_probe"]
        assert gen["decoder"]["steps"] == 10 and gen["decoder"]["loss_last"] < gen["decoder"]["loss_first"]
        assert gen["n"] == min(4, metrics["n"]["test_volumes"]) and gen["bertscore_layer"] == 6
        assert "report generation ROUGE-L" in printed and "0.44" in printed and "MiniLM layer 6" in printed
    else:
        assert metrics["segmentation"]["n_volumes"] == min(4, metrics["n"]["test_volumes"])
        assert metrics["seg_probe"]["probe"]["steps"] == 10


@pytest.fixture(scope="module")
def maskless(cache):
    """The same cohort prepared without RadGenome: no organ masks (as plain CT-RATE)."""
    root = cache.parent
    assert main(["manifest", "ctrate", str(root / "cohort"), "--val-fraction", "0.25",
                 "--out", str(root / "plain.parquet")]) == 0
    assert main(["prepare", "--manifest", str(root / "plain.parquet"), "--out", str(root / "plain")]) == 0
    return root / "plain"


def test_a_mask_task_on_a_maskless_cache_is_refused_up_front_with_the_fix(cache, maskless, tmp_path, capsys):
    """sigvlp's segmentation probe needs organ masks: `ctvlp train` refuses before step 1, `ctvlp eval` before
    encoding, each naming the tasks to run instead."""
    out = tmp_path / "train"
    assert main(["train", "--recipe", "sigvlp", "--debug", "--data", str(maskless), "--out", str(out), "--steps", "1",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "seg_probe need organ masks" in err and "--set 'eval.tasks=[organs,robustness]'" in err
    assert not (out / "checkpoints").exists()
    cfg = apply_overrides(get_recipe("sigvlp", debug=True), ["steps=1"])
    Trainer(cfg, cache, tmp_path / "run", progress=False).fit()
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--data", str(maskless), "--out", str(tmp_path / "e"),
                 "--bootstrap", "0", "--no-progress"]) == 2
    assert "--tasks zeroshot,retrieval,probe,organs,robustness" in capsys.readouterr().err


def test_generation_probe_trains_a_decoder_and_leaves_the_encoder_frozen(cache):
    """SCALE-VLP's generation: a fresh decoder learns the training reports from the frozen tokens (its loss
    falls); not one weight of the model moves; the reports are scored as the generation task scores them."""
    from ctvlp.data.cache import Cache
    from ctvlp.eval.generation_probe import evaluate_generation_probe
    from ctvlp.models.vlp import VisionLanguageModel

    torch.manual_seed(0)
    cfg = get_recipe("scalevlp", debug=True)
    model = VisionLanguageModel(cfg.model)
    assert getattr(model, "decoder", None) is None  # SCALE-VLP has no decoder of its own
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluation = apply_overrides(cfg, ["eval.gen_probe_steps=15", "eval.gen_probe_lr=3e-3", "eval.task_volumes=2"]).eval
    out = evaluate_generation_probe(model, Cache(cache), evaluation)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    info = out["decoder"]
    assert info["steps"] == 15 and info["split"] == "train"
    # a fresh decoder predicts nearly uniformly: cross-entropy ~ ln(vocabulary)
    assert info["loss_first"] == pytest.approx(math.log(len(model.text.tokenizer)), abs=0.3)
    assert info["loss_last"] < info["loss_first"] - 0.5  # measured 10.34 -> 9.08
    assert info["parameters"] > 0 and out["n"] == 2 and 0.0 <= out["rouge_l"] <= 1.0
    assert {"bleu4", "rouge_l", "bertscore_f1", "label_f1_micro"} <= set(out) and out["bertscore_layer"] == 6
