"""Zero-shot: prompt styles and pooling, prompt-pair softmax vs a loop, validation-only thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.errors import CtvlpError
from ctvlp.eval.metrics import auroc, best_f1_threshold, binary_metrics
from ctvlp.data.prompt_names import CORPUS
from ctvlp.data.prompts import PromptStyle, build_prompts, corpus_style, load_prompts, prompt_set
from ctvlp.eval.zeroshot import evaluate_zero_shot
from ctvlp.models.prompting import zero_shot_scores


# ---------------------------------------------------------------- prompts

def test_packaged_styles_write_the_published_prompts():
    texts, _ = build_prompts(["Lung nodule", "Cardiomegaly"], "ctclip")
    assert texts == ["Lung nodule is present.", "Lung nodule is not present.",
                     "Cardiomegaly is present.", "Cardiomegaly is not present."]
    texts, _ = build_prompts(["Lung nodule", "Cardiomegaly"], "colipri")
    assert texts == ["Lung nodules present", "No lung nodules present",
                     "Cardiomegaly present", "No cardiomegaly present"]


def test_every_style_covers_every_ctrate_label():
    prompts = load_prompts()
    assert {"ctclip", "colipri", "ensemble"} <= set(prompts.styles)
    for name in prompts.styles:
        texts, index = build_prompts(CTRATE_LABELS, name, prompts)
        assert len(texts) == len(set(texts)) == len(index.template)
        for l in range(len(CTRATE_LABELS)):
            assert index.positive[index.label == l].any() and (~index.positive[index.label == l]).any()
    texts, index = build_prompts(CTRATE_LABELS, "ensemble", prompts)
    assert len(texts) == 8 * len(CTRATE_LABELS)


def test_index_maps_texts_back_to_label_polarity_template():
    labels = ["Emphysema", "Pleural effusion"]
    style = load_prompts().style("ensemble")
    texts, index = build_prompts(labels, style)
    for text, l, pos, tmpl in zip(texts, index.label, index.positive, index.template):
        assert (tmpl, text) in style.sentences(labels[l], bool(pos))
        assert (tmpl in style.positive) == bool(pos)


def test_pool_is_normalised_mean_of_normalised_embeddings():
    texts, index = build_prompts(["Emphysema", "Atelectasis"], "ensemble")
    emb = torch.randn(len(texts), 16) * torch.rand(len(texts), 1) * 10  # different norms
    pos, neg = index.pool(emb)
    for l in range(2):
        for pooled, polarity in ((pos, True), (neg, False)):
            rows = [torch.nn.functional.normalize(emb[k], dim=0) for k in range(len(texts))
                    if index.label[k] == l and index.positive[k] == polarity]
            expected = torch.nn.functional.normalize(torch.stack(rows).mean(0), dim=0)
            assert torch.allclose(pooled[l], expected, atol=1e-6)
    single_texts, single = build_prompts(["Emphysema"], "ctclip")
    pos, neg = single.pool(np.array([[3.0, 4.0], [0.0, -2.0]]))
    assert torch.allclose(pos, torch.tensor([[0.6, 0.8]])) and torch.allclose(neg, torch.tensor([[0.0, -1.0]]))
    with pytest.raises(ValueError, match=r"\(2, D\)"):
        single.pool(torch.zeros(3, 4))


def test_user_file_with_per_label_override(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("styles:\n  mine:\n    case: lower\n    positive: ['{Label} seen']\n"
                    "    negative: ['No {label} seen']\n    phrases: {Lung nodule: nodules}\n"
                    "    templates:\n      Emphysema: {positive: ['Emphysematous lungs'], "
                    "negative: ['Normal lungs', 'No emphysema']}\n")
    texts, index = build_prompts(["Lung nodule", "Emphysema"], "mine", load_prompts(path))
    assert texts == ["Nodules seen", "No nodules seen", "Emphysematous lungs", "Normal lungs", "No emphysema"]
    assert index.positive.tolist() == [True, False, True, False, False]


@pytest.mark.parametrize("body, match", [
    ("styles:\n  a: {positive: ['{label}']}\n", "one negative"),
    ("styles:\n  a: {positive: ['{organ}'], negative: ['x']}\n", "may only use"),
    ("styles:\n  a: {positive: ['x'], negative: ['y'], case: upper}\n", "case"),
    ("labels: []\n", "styles"),
    ("styles: [unclosed\n", "bad prompt file"),
])
def test_bad_prompt_files(tmp_path, body, match):
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(CtvlpError, match=match):
        load_prompts(path)


def test_bad_prompt_requests(tmp_path):
    with pytest.raises(CtvlpError, match="no such prompt file"):
        load_prompts(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="unknown prompt style 'nope'"):
        build_prompts(["Emphysema"], "nope")
    with pytest.raises(ValueError, match="distinct"):
        build_prompts(["Emphysema", "Emphysema"], PromptStyle(positive=("{label}",), negative=("no {label}",)))


# ---------------------------------------------------------------- prompts mined from reports

REPORTS = [
    "No pleural effusion. Atherosclerotic calcifications in the coronary arteries. Heart size is normal.",
    "No pleural effusion. A 5 mm nodule {x} in the right lung. Coronary artery calcification.",
    "Small bilateral pleural effusion. No pleural effusion or pericardial effusion.",
    "A venous port is seen in the right chest wall. Atherosclerotic calcifications in the coronary arteries.",
]


def test_corpus_style_keeps_single_finding_sentences_most_frequent_first():
    report = load_prompts().style("report")
    labels = ["Pleural effusion", "Coronary artery wall calcification", "Medical material", "Lung nodule"]
    style = corpus_style(REPORTS, labels, report)
    texts, index = build_prompts(labels, style)
    by = {(index.labels[l], bool(p)): [t for t, li, pi in zip(texts, index.label, index.positive) if li == l and pi == p]
          for l in range(len(labels)) for p in (True, False)}
    # two findings in one sentence ("No pleural effusion or pericardial effusion.") is no template of either
    assert by["Pleural effusion", False] == ["No pleural effusion."]
    assert by["Pleural effusion", True] == ["Small bilateral pleural effusion."]
    assert by["Coronary artery wall calcification", True] == [  # twice before once
        "Atherosclerotic calcifications in the coronary arteries.", "Coronary artery calcification."]
    assert by["Medical material", True] == ["A venous port is seen in the right chest wall."]
    # sides no report states fall back to the report style, braces in a report stay literal
    assert by["Medical material", False] == ["No medical material.", "There is no medical material."]
    assert by["Lung nodule", True] == ["A 5 mm nodule {x} in the right lung."]
    assert corpus_style(REPORTS, labels, report, per_side=1).templates[
        "Coronary artery wall calcification"]["positive"] == ("Atherosclerotic calcifications in the coronary arteries.",)
    # a label outside the mined ones still has the fallback's prompts
    assert build_prompts(["Emphysema"], style)[0] == ["Emphysema.", "Emphysema is seen.", "No emphysema.",
                                                      "There is no emphysema."]
    with pytest.raises(ValueError, match="per_side"):
        corpus_style(REPORTS, labels, report, per_side=0)


def test_prompt_set_takes_the_models_own_corpus_style_then_mines_then_refuses():
    labels = ["Pleural effusion"]
    mined = prompt_set(CORPUS, labels, reports=lambda: REPORTS)
    assert build_prompts(labels, CORPUS, mined)[0] == ["Small bilateral pleural effusion.", "No pleural effusion."]
    stored = {CORPUS: PromptStyle(positive=(), negative=(), templates={
        "Pleural effusion": {"positive": ("Fluid.",), "negative": ("Dry.",)}}).to_dict()}

    def never():
        pytest.fail("a model with its own corpus style is not mined again")

    own = prompt_set(CORPUS, labels, stored=stored, reports=never)
    assert build_prompts(labels, CORPUS, own)[0] == ["Fluid.", "Dry."]
    assert {"ctclip", "report"} <= set(own.styles)  # the packaged styles stay available
    assert prompt_set("ctclip", labels, reports=never).styles.keys() == load_prompts().styles.keys()
    with pytest.raises(CtvlpError, match="mined from training reports"):
        prompt_set(CORPUS, labels)
    with pytest.raises(CtvlpError, match="no report text"):
        prompt_set(CORPUS, labels, reports=lambda: ["", " "])


# ---------------------------------------------------------------- scores

def loop_scores(image, pos, neg, t):
    """softmax([t cos(v, u+), t cos(v, u-)])[0], one volume and one label at a time, in float64."""
    def cos(a, b):
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    out = np.zeros((len(image), len(pos)))
    for n, v in enumerate(image):
        for l in range(len(pos)):
            a, b = math.exp(t * cos(v, pos[l])), math.exp(t * cos(v, neg[l]))
            out[n, l] = a / (a + b)
    return out


@pytest.mark.parametrize("t", [1.0, 14.3, 100.0])
def test_zero_shot_scores_match_a_loop(t):
    rng = np.random.default_rng(0)
    image, pos, neg = rng.normal(size=(7, 12)) * 3, rng.normal(size=(5, 12)), rng.normal(size=(5, 12)) * 0.1
    scores = zero_shot_scores(image, pos, neg, logit_scale=t)
    assert isinstance(scores, np.ndarray) and scores.shape == (7, 5)
    np.testing.assert_allclose(scores, loop_scores(image, pos, neg, t), atol=1e-5)


def test_zero_shot_scores_torch_in_torch_out_with_gradient():
    image = torch.randn(4, 8, requires_grad=True)
    scale = torch.tensor(10.0, requires_grad=True)
    scores = zero_shot_scores(image, torch.randn(3, 8), torch.randn(3, 8), logit_scale=scale)
    assert isinstance(scores, torch.Tensor) and scores.shape == (4, 3)
    scores.sum().backward()
    assert image.grad is not None and scale.grad is not None
    same = zero_shot_scores(image.detach(), torch.ones(1, 8), torch.ones(1, 8) * 5, logit_scale=100.0)
    # prompts in the same direction: no preference and no overflow at t = 100
    assert same.dtype == torch.float64 and torch.allclose(same, torch.full((4, 1), 0.5, dtype=torch.float64))


def test_confident_scores_keep_their_order_at_the_largest_scale():
    # t (cos - cos) from 33 down to 12: float32 would round most of these probabilities to 1.0
    theta = np.linspace(0.55, 0.7, 6)
    image = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    scores = zero_shot_scores(image, np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), logit_scale=100.0)
    assert (np.diff(scores[:, 0]) < 0).all() and (scores < 1).all()


def test_zero_shot_scores_bad_shapes():
    with pytest.raises(ValueError, match="one D"):
        zero_shot_scores(np.zeros((2, 8)), np.zeros((3, 8)), np.zeros((3, 7)))
    with pytest.raises(ValueError, match="one D"):
        zero_shot_scores(np.zeros((2, 8)), np.zeros((3, 6)), np.zeros((3, 6)))


# ---------------------------------------------------------------- protocol

def random_split(rng, n, n_labels, shift=1.0):
    """Labels with ~30 % positives and scores that are higher, on average, for positives."""
    labels = (rng.random((n, n_labels)) < 0.3).astype(float)
    return rng.normal(size=(n, n_labels)) + shift * labels, labels


NAMES = ["a", "b", "c"]


def test_thresholds_come_from_validation_only():
    rng = np.random.default_rng(0)
    val_scores, val_labels = random_split(rng, 80, 3)
    first = evaluate_zero_shot(val_scores, val_labels, None, *random_split(rng, 50, 3), None, NAMES)
    second = evaluate_zero_shot(val_scores, val_labels, None, *random_split(rng, 120, 3, shift=-2), None, NAMES)
    for j, name in enumerate(NAMES):
        threshold = best_f1_threshold(val_scores[:, j], val_labels[:, j])
        assert first["per_label"][name]["threshold"] == second["per_label"][name]["threshold"] == threshold
    other_val = evaluate_zero_shot(*random_split(rng, 80, 3), None, val_scores, val_labels, None, NAMES)
    assert [other_val["per_label"][n]["threshold"] for n in NAMES] != \
        [first["per_label"][n]["threshold"] for n in NAMES]


def test_metrics_are_test_metrics_at_the_validation_threshold():
    rng = np.random.default_rng(1)
    val, test = random_split(rng, 60, 3), random_split(rng, 90, 3)
    avail = rng.random((90, 3)) < 0.8
    out = evaluate_zero_shot(*val, None, *test, avail, NAMES)
    for j, name in enumerate(NAMES):
        row = out["per_label"][name]
        column = (test[0][:, j], test[1][:, j], avail[:, j])
        assert row["auroc"] == auroc(*column)
        assert {k: row[k] for k in ("f1", "precision", "recall", "accuracy", "balanced_accuracy")} == \
            binary_metrics(column[0], column[1], row["threshold"], column[2])
        assert row["n"] == avail[:, j].sum() and row["n_pos"] == test[1][avail[:, j], j].sum()
    assert out["mean_auroc"] == pytest.approx(np.mean([out["per_label"][n]["auroc"] for n in NAMES]))
    assert out["mean_f1"] == pytest.approx(np.mean([out["per_label"][n]["f1"] for n in NAMES]))
    assert out["labels_in_mean"] == NAMES and out["excluded"] == {}


def test_single_class_on_test_and_no_positive_on_validation_are_excluded_and_listed():
    rng = np.random.default_rng(2)
    (val_s, val_y), (test_s, test_y) = random_split(rng, 60, 3), random_split(rng, 60, 3)
    test_y[:, 1] = 0  # b: single class on test
    val_y[:, 2] = 0  # c: no positive on validation
    out = evaluate_zero_shot(val_s, val_y, None, test_s, test_y, None, NAMES)
    assert math.isnan(out["per_label"]["b"]["auroc"])
    assert math.isnan(out["per_label"]["c"]["threshold"]) and math.isnan(out["per_label"]["c"]["f1"])
    assert set(out["excluded"]) == {"b", "c"} and out["labels_in_mean"] == ["a"]
    assert "single class on test" in out["excluded"]["b"] and "validation" in out["excluded"]["c"]
    assert out["mean_auroc"] == out["per_label"]["a"]["auroc"]
    assert out["mean_f1"] == out["per_label"]["a"]["f1"]


def test_missing_test_labels_never_count_as_negatives():
    rng = np.random.default_rng(3)
    val, (test_s, test_y) = random_split(rng, 60, 3), random_split(rng, 60, 3)
    avail = rng.random((60, 3)) < 0.6
    base = evaluate_zero_shot(*val, None, test_s, test_y, avail, NAMES)
    garbage_s, garbage_y = test_s.copy(), test_y.copy()
    garbage_s[~avail], garbage_y[~avail] = 99.0, 1 - test_y[~avail]
    assert evaluate_zero_shot(*val, None, garbage_s, garbage_y, avail, NAMES) == base
    as_nan = np.where(avail, test_y, np.nan)
    assert evaluate_zero_shot(*val, None, test_s, as_nan, None, NAMES) == base


def test_bootstrap_interval_brackets_the_mean():
    rng = np.random.default_rng(4)
    out = evaluate_zero_shot(*random_split(rng, 60, 3), None, *random_split(rng, 150, 3), None, NAMES,
                             n_bootstrap=200, seed=0)
    lo, hi = out["mean_auroc_ci"]
    assert lo < out["mean_auroc"] < hi and hi - lo < 0.3


def test_protocol_bad_input():
    rng = np.random.default_rng(5)
    split = random_split(rng, 10, 3)
    with pytest.raises(ValueError, match=r"test: scores and labels must both be \(N, 3\)"):
        evaluate_zero_shot(*split, None, split[0][:, :2], split[1][:, :2], None, NAMES)
    with pytest.raises(ValueError, match="validation: available must be bool"):
        evaluate_zero_shot(*split, np.ones((10, 3)), *split, None, NAMES)
    with pytest.raises(ValueError, match="distinct"):
        evaluate_zero_shot(*split, None, *split, None, ["a", "a", "b"])


def test_prompts_to_scores_end_to_end():
    labels = list(CTRATE_LABELS[:4])
    texts, index = build_prompts(labels, "ensemble")
    text_emb = torch.randn(len(texts), 32)  # stands in for encoding every prompt once
    pos, neg = index.pool(text_emb)
    scores = zero_shot_scores(torch.randn(6, 32), pos, neg, logit_scale=5.0)
    assert scores.shape == (6, 4) and bool(((scores > 0) & (scores < 1)).all())
