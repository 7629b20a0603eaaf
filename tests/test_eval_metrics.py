"""Metrics: golden numbers by hand, agreement with sklearn and a pairwise reference, missing labels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score, precision_score,
                             recall_score, roc_auc_score)

from ctvlp.eval.metrics import auroc, best_f1_threshold, binary_metrics, bootstrap_ci


def pairwise_auroc(scores, labels):
    """P(score of a positive > score of a negative) + 1/2 P(equal), over all pairs."""
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_golden():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: (0.5 + 1 + 1 + 1) / 4
    assert auroc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_agrees_with_sklearn_and_pairs(seed):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = (rng.random(60) < 0.3).astype(int)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert auroc(scores, labels) == pytest.approx(pairwise_auroc(scores, labels), abs=1e-12)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0], []])
def test_auroc_single_class_is_nan(labels):
    assert math.isnan(auroc(np.linspace(0, 1, len(labels)), labels))


def test_auroc_nothing_available_is_nan():
    assert math.isnan(auroc([0.1, 0.9], [0, 1], available=np.array([False, False])))


def test_missing_labels_are_excluded_not_negatives():
    rng = np.random.default_rng(0)
    scores, labels = rng.random(40), (rng.random(40) < 0.4).astype(float)
    avail = rng.random(40) < 0.7
    changed = scores.copy()
    changed[~avail] = rng.random((~avail).sum()) * 10 - 5  # anything at all
    relabelled = labels.copy()
    relabelled[~avail] = 1 - relabelled[~avail]
    for s, y in ((changed, labels), (scores, relabelled)):
        assert auroc(s, y, avail) == auroc(scores, labels, avail)
        assert best_f1_threshold(s, y, avail) == best_f1_threshold(scores, labels, avail)
        assert binary_metrics(s, y, 0.5, avail) == binary_metrics(scores, labels, 0.5, avail)
    assert auroc(scores, labels, avail) == pytest.approx(roc_auc_score(labels[avail], scores[avail]))
    as_negatives = np.where(avail, labels, 0)
    assert auroc(scores, labels, avail) != pytest.approx(auroc(scores, as_negatives))


def test_nan_labels_are_missing_without_mask():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.99, 0.0])
    labels = np.array([0, 0, 1, 1, np.nan, np.nan])
    assert auroc(scores, labels) == pytest.approx(0.75)
    assert binary_metrics(scores, labels, 0.3)["accuracy"] == pytest.approx(0.75)


def test_binary_metrics_golden():
    # pred = [1, 1, 0, 1, 0]: TP 1, FP 2, FN 1, TN 1
    m = binary_metrics([0.9, 0.8, 0.3, 0.6, 0.1], [1, 0, 1, 0, 0], threshold=0.5)
    assert m == pytest.approx({"f1": 0.4, "precision": 1 / 3, "recall": 0.5, "accuracy": 0.4,
                               "balanced_accuracy": (0.5 + 1 / 3) / 2})


def test_binary_metrics_threshold_is_inclusive():
    assert binary_metrics([0.5, 0.2], [1, 0], threshold=0.5)["f1"] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_binary_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, labels = rng.random(50), (rng.random(50) < 0.3).astype(int)
    threshold = float(rng.random())
    pred = (scores >= threshold).astype(int)
    expected = {"f1": f1_score(labels, pred, zero_division=0),
                "precision": precision_score(labels, pred, zero_division=0),
                "recall": recall_score(labels, pred, zero_division=0),
                "accuracy": accuracy_score(labels, pred),
                "balanced_accuracy": balanced_accuracy_score(labels, pred)}
    assert binary_metrics(scores, labels, threshold) == pytest.approx(expected, abs=1e-12)


def test_binary_metrics_degenerate():
    m = binary_metrics([0.9, 0.1], [0, 0], threshold=0.5)  # no positive: F1 0, specificity 1/2
    assert m["f1"] == 0.0 and m["recall"] == 0.0 and m["balanced_accuracy"] == 0.5
    assert all(math.isnan(v) for v in binary_metrics([0.9], [1], threshold=float("nan")).values())
    assert all(math.isnan(v) for v in binary_metrics([], [], threshold=0.5).values())


def test_best_f1_threshold_golden():
    # F1 at 0.9, 0.8, 0.7, 0.6, 0.5 = 2/4, 2/5, 4/6, 6/7, 6/8 -> 0.6
    assert best_f1_threshold([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 1, 0]) == 0.6
    # F1 at 0.9 and at 0.6 are both 2/3: the tie goes to the higher threshold
    assert best_f1_threshold([0.9, 0.8, 0.7, 0.6], [1, 0, 0, 1]) == 0.9
    # tied scores are one candidate: at 0.5 both tied items are predicted positive (F1 2/3 vs 2/4)
    assert best_f1_threshold([0.5, 0.5, 0.4], [1, 0, 0]) == 0.5


def test_best_f1_threshold_without_positives_is_nan():
    assert math.isnan(best_f1_threshold([0.3, 0.7], [0, 0]))
    assert math.isnan(best_f1_threshold([0.3, 0.7], [1, 0], available=np.array([False, True])))


@pytest.mark.parametrize("seed", range(5))
def test_best_f1_threshold_matches_a_loop_over_candidates(seed):
    rng = np.random.default_rng(seed)
    scores, labels = np.round(rng.random(40), 2), (rng.random(40) < 0.35).astype(int)
    f1 = {t: binary_metrics(scores, labels, t)["f1"] for t in np.unique(scores)}
    best = max(f1.values())
    expected = max(t for t, v in f1.items() if v >= best - 1e-12)
    assert best_f1_threshold(scores, labels) == expected


@pytest.mark.parametrize("kwargs, match", [
    (dict(scores=[0.1, 0.2], labels=[0]), "1-D of one length"),
    (dict(scores=[[0.1, 0.2]], labels=[[0, 1]]), "1-D of one length"),
    (dict(scores=[0.1, 0.2], labels=[0, 2]), "0 or 1"),
    (dict(scores=[0.1, 0.2], labels=[0, 1], available=[1, 1]), "bool"),
    (dict(scores=[0.1, float("nan")], labels=[0, 1]), "NaN"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        auroc(**kwargs)


def test_bootstrap_ci():
    values = np.random.default_rng(0).normal(size=400)
    lo, hi = bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), n_boot=300, seed=1)
    assert lo < values.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * values.std() / 20, rel=0.25)  # normal-theory width
    assert bootstrap_ci(lambda idx: float(values[idx].mean()), 400, 300, seed=1) == (lo, hi)
    assert all(math.isnan(v) for v in bootstrap_ci(lambda idx: float("nan"), 5, 10))
