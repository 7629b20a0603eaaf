"""`ctvlp eval`: patient bootstrap, scan-level aggregation, probe, protocol, CLI outputs and bad input."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ctvlp.cli import main
from ctvlp.config import apply_overrides
from ctvlp.data.cache import Cache
from ctvlp.eval.aggregate import Grouping, scan_embeddings, scan_scores
from ctvlp.eval.metrics import bootstrap_ci, bootstrap_values
from ctvlp.eval.probe import Split, linear_probe
from ctvlp.eval.retrieval import recall_intervals
from ctvlp.eval.run import Encoded
from ctvlp.eval.suite import SuiteConfig, protocol_labels, zero_shot_levels
from ctvlp.eval.zeroshot import METRICS
from ctvlp.recipes import get_recipe
from ctvlp.train.loop import Trainer
from conftest import make_synthetic_cache, stderr_terminal

pytestmark = pytest.mark.usefixtures("one_thread")
DOC = Path(__file__).resolve().parents[1] / "docs" / "eval-metrics.md"


# ---------------------------------------------------------------- patient bootstrap

def test_cluster_bootstrap_matches_a_plain_reference():
    rng = np.random.default_rng(3)
    values = rng.normal(size=23)
    clusters = rng.choice(["p3", "p1", "p7", "p2", "p9"], size=23)
    stat = lambda idx: float(values[idx].mean())  # noqa: E731
    ours = bootstrap_values(stat, 23, 200, seed=5, clusters=clusters)
    draw = np.random.default_rng(5)
    names = np.unique(clusters)  # clusters numbered in sorted id order
    reference = []
    for _ in range(200):
        picked = draw.integers(0, names.size, names.size)
        idx = np.concatenate([np.flatnonzero(clusters == names[c]) for c in picked])
        reference.append(values[idx].mean())
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    # Every row its own cluster, in row order: exactly the row bootstrap.
    assert bootstrap_ci(stat, 23, 300, seed=2, clusters=np.arange(23)) == bootstrap_ci(stat, 23, 300, seed=2)


def test_cluster_bootstrap_where_clusters_matter():
    # Patient A: 9 volumes scoring 1; patient B: 1 volume scoring 0. Resampling patients can only give
    # the means of AA (1), AB (0.9) or BB (0); resampling rows almost never reaches 0.
    values = np.array([1.0] * 9 + [0.0])
    clusters = np.array(["A"] * 9 + ["B"])
    stat = lambda idx: float(values[idx].mean())  # noqa: E731
    by_patient = bootstrap_values(stat, 10, 400, seed=0, clusters=clusters)
    assert set(np.round(by_patient, 12)) == {0.0, 0.9, 1.0}
    assert bootstrap_ci(stat, 10, 400, seed=0, clusters=clusters) == (0.0, 1.0)
    lo, hi = bootstrap_ci(stat, 10, 400, seed=0)
    assert lo >= 0.6 and hi == 1.0


# ---------------------------------------------------------------- scan level

def test_scan_level_aggregation_golden_numbers():
    g = Grouping.of(["s2", "s1", "s2", "s3", "s1"])
    assert g.names == ["s2", "s1", "s3"] and g.first.tolist() == [0, 1, 3]
    scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6], [0.6, 0.5]])
    labels = np.array([[0, 1], [1, 0], [0, 1], [1, 0], [1, 0]])
    avail = np.array([[1, 1], [1, 1], [1, 1], [0, 1], [1, 0]], dtype=bool)
    s, y, a = scan_scores(scores, labels, avail, g)
    np.testing.assert_allclose(s, [[0.2, 0.8], [0.4, 0.65], [0.4, 0.6]])
    np.testing.assert_array_equal(y, [[0, 1], [1, 0], [0, 0]])
    np.testing.assert_array_equal(a, [[1, 1], [1, 1], [0, 1]])
    emb = scan_embeddings(torch.tensor([[3.0, 0], [0, 2], [0, 5], [1, 1], [0, 1]]), g)
    np.testing.assert_allclose(emb.numpy(), [[2 ** -0.5, 2 ** -0.5], [0, 1], [2 ** -0.5, 2 ** -0.5]], atol=1e-6)


def _encoded(rng, n_scans: int, labels: int) -> Encoded:
    scans = [f"p{i // 2}/s{i}" for i in range(n_scans) for _ in range(2)]  # 2 reconstructions, 2 scans a patient
    y = np.repeat(rng.integers(0, 2, (n_scans, labels)), 2, axis=0).astype(np.float32)
    return Encoded(ids=[str(i) for i in range(len(scans))], image_emb=torch.randn(len(scans), 8),
                   report_emb=torch.randn(len(scans), 8), labels=y, available=np.ones_like(y, dtype=bool),
                   scans=scans, texts=[""] * len(scans), patients=[s.split("/")[0] for s in scans])


def test_zero_shot_levels_thresholds_never_see_test_labels():
    rng = np.random.default_rng(0)
    val, test = _encoded(rng, 12, 3), _encoded(rng, 10, 3)
    weights = torch.randn(8, 3)
    score = lambda emb: torch.sigmoid(emb @ weights).double().numpy()  # noqa: E731
    cfg = SuiteConfig(n_bootstrap=20)
    first, scores = zero_shot_levels(score, val, test, [0, 1, 2], ["a", "b", "c"], cfg)
    # Scan level = mean of the two reconstructions' scores, golden against the volume-level ones.
    assert first["scan"]["per_label"]["a"]["auroc"] == pytest.approx(roc_auc_score(
        test.labels[::2, 0], (scores[::2, 0] + scores[1::2, 0]) / 2))
    permuted = Encoded(**{**test.__dict__, "labels": test.labels[rng.permutation(len(test.ids))]})
    second, _ = zero_shot_levels(score, val, permuted, [0, 1, 2], ["a", "b", "c"], cfg)
    for level in ("volume", "scan"):
        for name in "abc":
            t1, t2 = (r[level]["per_label"][name]["threshold"] for r in (first, second))
            assert t1 == t2 or (np.isnan(t1) and np.isnan(t2))


# ---------------------------------------------------------------- probe and retrieval

def test_probe_matches_a_direct_sklearn_call():
    rng = np.random.default_rng(1)
    w = rng.normal(size=6)
    def split(n):
        x = rng.normal(size=(n, 6))
        y = (x @ w + rng.normal(scale=1.0, size=n) > 0).astype(np.float32)[:, None]
        return Split(x, y, np.ones_like(y, dtype=bool))
    train, val, test = split(80), split(40), split(40)
    out = linear_probe(train, val, test, ["x"], n_bootstrap=30, clusters=np.arange(40) // 2)
    c = out["per_label"]["x"]["C"]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    scaler = StandardScaler().fit(unit(train.x))
    direct = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(unit(train.x)), train.labels[:, 0])
    expected = roc_auc_score(test.labels[:, 0], direct.decision_function(scaler.transform(unit(test.x))))
    assert out["per_label"]["x"]["auroc"] == pytest.approx(expected, abs=1e-9)
    assert out["mean_auroc"] == pytest.approx(expected, abs=1e-9)
    lo, hi = out["mean_auroc_ci"]
    assert lo <= expected <= hi and out["per_label"]["x"]["auroc_ci"] == [lo, hi]


def test_recall_intervals_resample_query_patients():
    """Patient 0 asks 9 queries all found first, patient 1 one query never found: by patient the R@1
    interval spans [0, 1] (a resample may hold only patient 1), by row it stays near 0.9."""
    ranks = np.array([1] * 9 + [50])
    by_patient = recall_intervals(ranks, ks=(1,), n_bootstrap=400, clusters=[0] * 9 + [1])
    by_row = recall_intervals(ranks, ks=(1,), n_bootstrap=400)
    assert by_patient["recall@1_ci"] == [0.0, 1.0]
    assert by_row["recall@1_ci"][0] >= 0.6 and by_row["median_rank_ci"] == [1.0, 1.0]


# ---------------------------------------------------------------- CLI

@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evalsuite")
    cache = make_synthetic_cache(root, 24, 3)
    Trainer(apply_overrides(get_recipe("demo", debug=True), ["steps=1"]), cache, root / "run", progress=False).fit()
    return root / "run", cache


def _paths(obj, path: str = "") -> set[str]:
    """The documented key paths of a metrics.json object (placeholders as in docs/eval-metrics.md)."""
    out = set()
    for key, value in obj.items():
        parent = path.rsplit(".", 1)[-1]
        name = key
        if parent in ("per_label", "excluded", "skipped"):
            name = "<label>"
        elif path in ("zeroshot", "retrieval") and key in ("volume", "scan"):
            name = "<level>"
        elif re.fullmatch(r"retrieval\.<level>", path):
            name = "<direction>"
        elif path == "seconds" and key not in ("encode", "total"):
            name = "<task>"
        name = re.sub(r"^recall@\d+", "recall@<k>", name)
        if path.startswith("zeroshot.<level>"):
            name = re.sub(rf"^(mean_)?({'|'.join(METRICS)})(_ci)?$", lambda m: f"{m[1] or ''}<metric>{m[3] or ''}", name)
        full = f"{path}.{name}" if path else name
        if value == {} and key in ("per_label", "excluded", "skipped"):
            out.add(f"{full}.<label>")  # an empty map of labels
        else:
            out |= _paths(value, full) if isinstance(value, dict) and value else {full}
    return out


def test_cli_writes_metrics_matching_the_schema_doc_csvs_and_html(run, tmp_path, capsys):
    """... with --device cpu, and a progress bar (stderr, on a terminal) that counts the encoding and each task."""
    ckpt, cache = run
    out = tmp_path / "eval"
    with stderr_terminal() as terminal:
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(cache), "--out", str(out), "--bootstrap", "50",
                     "--device", "cpu"]) == 0
    assert "eval: 100%" in terminal.getvalue() and "| 4/4 [" in terminal.getvalue()  # encode, zeroshot, retrieval, probe
    printed = capsys.readouterr().out
    assert "%|" not in printed
    assert "zero-shot macro AUROC" in printed and "R@5 volume to report" in printed and "linear probe" in printed
    assert str(out / "metrics.json") in printed and str(out / "report.html") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOC.read_text(), flags=re.M))
    assert _paths(metrics) <= documented, _paths(metrics) - documented
    assert documented - _paths(metrics) <= {"<task>"}
    assert metrics["schema_version"] == 3 and metrics["tasks"] == ["zeroshot", "retrieval", "probe"]
    assert len(metrics["protocol"]["labels"]) == 18 and metrics["n"]["test_patients"] >= 2
    for level in ("volume", "scan"):
        zs = metrics["zeroshot"][level]
        for name in zs["labels_in_mean"]:
            lo, hi = zs["per_label"][name]["auroc_ci"]
            assert lo <= hi and 0 <= lo and hi <= 1
    import pandas as pd
    zeroshot = pd.read_csv(out / "zeroshot.csv")
    assert len(zeroshot) == 2 * 19 and {"auroc_lo", "auroc_hi", "threshold"} <= set(zeroshot.columns)
    assert set(pd.read_csv(out / "retrieval.csv")["direction"]) == {"volume_to_report", "report_to_volume"}
    assert "macro" in set(pd.read_csv(out / "probe.csv")["label"])
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and "top-3 retrieved" in html


def test_report_shows_each_extra_tasks_table_and_overlays(tmp_path):
    """write_outputs on a hand-made result: the robustness grid and the per-structure Dice become CSVs and the
    same tables in report.html, the segmentation overlays become figures, and metrics.json keeps no PNG."""
    import pandas as pd

    from ctvlp.eval.outputs import write_outputs
    from ctvlp.eval.suite import SuiteResult

    summary = [{"n": n, "padding": p, "max_slices": None if n == "all" else n, "mean_auroc": auroc,
                "r5_volume_to_report": 0.1, "r5_report_to_volume": 0.2, "mean_dice": 0.3}
               for (n, p), auroc in zip([("all", "repeat"), (1, "repeat"), (1, "zero")], [0.71, 0.62, 0.54])]
    metrics = {"schema_version": 1, "tasks": ["robustness", "segmentation"], "cache": "c",
               "protocol": {"name": "18", "labels": ["a"], "skipped": {}},
               "n": {"test_volumes": 3, "test_scans": 3, "test_patients": 2}, "bootstrap": {"n": 0},
               "robustness": {"depth": 8, "summary": summary, "results": {}},
               "segmentation": {"mean_dice": 0.4, "per_structure": {"aorta": {"dice": 0.4, "n": 2}, "liver": {
                   "dice": None, "n": 0}}}}
    figure = {"caption": "zero-shot, test volume v7", "png_base64": "iVBORw0KGgo="}
    write_outputs(tmp_path, SuiteResult(metrics=metrics, overlays={"segmentation": [figure]}))
    robust = pd.read_csv(tmp_path / "robustness.csv")
    assert list(robust["mean_auroc"]) == [0.71, 0.62, 0.54] and list(robust["padding"]) == ["repeat", "repeat", "zero"]
    assert list(pd.read_csv(tmp_path / "segmentation.csv")["item"]) == ["aorta", "liver"]
    html = (tmp_path / "report.html").read_text()
    section = html.split("<h2>robustness</h2>")[1].split("<h2>")[0]
    assert "<th>mean_auroc</th>" in section and all(f"<td>{v}</td>" in section for v in ("0.710", "0.620", "0.540"))
    section = html.split("<h2>segmentation</h2>")[1]
    assert "<td>aorta</td>" in section and "<td>n/a</td>" in section  # liver's undefined Dice
    assert "data:image/png;base64,iVBORw0KGgo=" in section and "zero-shot, test volume v7" in section
    assert "png_base64" not in (tmp_path / "metrics.json").read_text()


def test_extra_tasks_see_the_suites_task_list(run):
    """robustness repeats the organs task asked for on the command line, not only the checkpoint's eval.tasks."""
    from ctvlp.eval.suite import run_suite
    from ctvlp.recipes.run import load_trained

    ckpt, cache = run
    trained = load_trained(ckpt)
    assert "organs" not in trained.config.eval.tasks
    eval_cfg = dataclasses.replace(trained.config.eval, robustness_counts=(1,), robustness_paddings=("repeat",),
                                   robustness_probe=False)
    result = run_suite(trained.model, Cache(cache), eval_cfg, SuiteConfig(tasks=("zeroshot", "organs", "robustness"),
                                                                         n_bootstrap=0))
    robustness = result.metrics["robustness"]
    assert robustness["tasks"] == ["organs"] and "organ_auroc" in robustness["summary"][0]
    assert robustness["results"]["1/repeat"]["organs"]["chunk_depth"] == 1


def test_protocol_16_has_16_labels(run, tmp_path):
    ckpt, cache = run
    labels, skipped = protocol_labels("16", Cache(cache))
    assert len(labels) == 16 and not skipped and {"Lymphadenopathy", "Medical material"}.isdisjoint(labels)


def test_no_progress_draws_no_bar(run, tmp_path):
    ckpt, cache = run
    with stderr_terminal() as terminal:
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(cache), "--out", str(tmp_path / "ev"),
                     "--bootstrap", "0", "--tasks", "retrieval", "--no-progress"]) == 0
    assert terminal.getvalue() == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_eval_on_cuda_scores_the_same_volumes(run, tmp_path):
    ckpt, cache = run
    metrics = {}
    for device in ("cpu", "cuda"):
        argv = ["eval", "--checkpoint", str(ckpt), "--data", str(cache), "--out", str(tmp_path / device),
                "--bootstrap", "0", "--tasks", "zeroshot,retrieval", "--device", device]
        assert main(argv) == 0
        metrics[device] = json.loads((tmp_path / device / "metrics.json").read_text())
    assert metrics["cuda"]["n"] == metrics["cpu"]["n"]
    cpu, cuda = (metrics[d]["zeroshot"]["volume"]["mean_auroc"] for d in ("cpu", "cuda"))
    assert abs(cuda - cpu) < 0.05


def _bad(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_bad_inputs_exit_2_naming_the_file_and_reason(run, tmp_path, capsys):
    ckpt, cache = run
    base = ["eval", "--data", str(cache), "--out", str(tmp_path / "o"), "--bootstrap", "0"]
    good = ["--checkpoint", str(ckpt)]
    _bad(base + ["--checkpoint", str(tmp_path / "none.pt")], capsys, "none.pt", "no such checkpoint")
    corrupt = tmp_path / "step-0000001.pt"
    corrupt.write_bytes(b"not a checkpoint")
    _bad(base + ["--checkpoint", str(corrupt)], capsys, str(corrupt), "corrupt")
    _bad(base + good + ["--test-split", "nosuch"], capsys, str(cache), "nosuch")
    _bad(base + good + ["--tasks", "zeroshot,segmentation"], capsys, "segmentation", "voxel head")
    _bad(base + good + ["--tasks", "generation"], capsys, "generation", "report decoder")
    _bad(base + good + ["--tasks", "zeroshot,dance"], capsys, "unknown task", "dance")
    _bad(base + good + ["--protocol", "17"], capsys, "invalid choice: '17'", "'18', '16'")
    _bad(base + good + ["--prompt-style", "label_head"], capsys, "label head", "uniferum")
    broken = tmp_path / "broken.yaml"
    broken.write_text("styles: [unclosed\n")
    _bad(base + good + ["--prompts", str(broken)], capsys, str(broken), "bad prompt file")
    partial = tmp_path / "partial.yaml"
    partial.write_text("styles:\n  mine:\n    templates:\n      Cardiomegaly:\n"
                       "        positive: ['Cardiomegaly.']\n        negative: ['No cardiomegaly.']\n")
    _bad(base + good + ["--prompts", str(partial), "--prompt-style", "mine"], capsys, str(partial), "Emphysema")
    _bad(base + good + ["--prompts", str(partial), "--prompt-style", "ctclip"], capsys, str(partial),
         "--prompt-style 'ctclip' is not a style of this file; styles: mine, label_head, corpus")


def test_corpus_prompts_mined_at_evaluation_equal_the_ones_the_model_carries(run):
    """A model trained with style corpus scores with its own mined prompts; one without them (cleared here)
    gets the same prompts mined from the cache's corpus split, and a missing split is a clear error."""
    from ctvlp.errors import CtvlpError
    from ctvlp.data.prompt_names import CORPUS
    from ctvlp.eval.suite import run_suite
    from ctvlp.recipes.run import load_trained

    ckpt, cache = run
    trained = load_trained(ckpt)
    assert trained.config.eval.prompt_style == CORPUS and CORPUS in trained.model.prompts
    suite = SuiteConfig(tasks=("zeroshot",), n_bootstrap=0)
    carried = run_suite(trained.model, Cache(cache), trained.config.eval, suite).metrics["zeroshot"]
    trained.model.prompts = {}
    mined = run_suite(trained.model, Cache(cache), trained.config.eval, suite).metrics["zeroshot"]
    assert json.dumps(mined, sort_keys=True) == json.dumps(carried, sort_keys=True)  # NaN-safe: labels without positives
    with pytest.raises(CtvlpError, match="nosuch"):
        run_suite(trained.model, Cache(cache), dataclasses.replace(trained.config.eval, corpus_split="nosuch"), suite)
