"""Zero-shot classification from scores: the validation/test protocol and its metrics.

The caller encodes every volume once and every prompt once and scores them
(:mod:`ctvlp.models.prompting`); everything here works on those scores, so it is independent of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ctvlp.eval.metrics import (auroc, best_f1_threshold, binary_metrics, bootstrap_values, percentile_interval,
                                select_available)

_THRESHOLD_METRICS = ("f1", "precision", "recall", "accuracy", "balanced_accuracy")
METRICS = ("auroc", *_THRESHOLD_METRICS)
"""Every metric reported per label and as a macro mean (``mean_<metric>``)."""


def _check_split(name: str, scores: np.ndarray, labels: np.ndarray, avail: np.ndarray | None,
                 n_labels: int) -> np.ndarray:
    """The availability mask of one split (from NaN labels when None); ValueError on bad shapes."""
    if scores.ndim != 2 or scores.shape != labels.shape or scores.shape[1] != n_labels:
        raise ValueError(f"{name}: scores and labels must both be (N, {n_labels}), "
                         f"got {scores.shape} and {labels.shape}")
    if avail is None:
        return ~np.isnan(labels.astype(np.float64))
    avail = np.asarray(avail)
    if avail.dtype != bool or avail.shape != scores.shape:
        raise ValueError(f"{name}: available must be bool {scores.shape}, got {avail.dtype} {avail.shape}")
    return avail


def _label_result(val: tuple, test: tuple) -> dict[str, float | int]:
    """Threshold on the validation split, every metric on the test split, for one label."""
    threshold = best_f1_threshold(*val)
    _, test_labels = select_available(*test)
    return {"auroc": auroc(*test), **binary_metrics(test[0], test[1], threshold, test[2]),
            "threshold": threshold, "n_pos": int(test_labels.sum()), "n": int(test_labels.size)}


def evaluate_zero_shot(scores_val: np.ndarray, labels_val: np.ndarray, avail_val: np.ndarray | None,
                       scores_test: np.ndarray, labels_test: np.ndarray, avail_test: np.ndarray | None,
                       label_names: Sequence[str], n_bootstrap: int = 0, seed: int = 0,
                       clusters: Sequence | np.ndarray | None = None, level: float = 0.95) -> dict:
    """Zero-shot metrics on the test split with F1 thresholds chosen on the validation split.

    Inputs are (N_split, L) arrays; ``avail_*`` bool masks (None: NaN labels are missing). Per label:
    the threshold maximising F1 on validation (:func:`best_f1_threshold`) is applied unchanged to
    test; the test data never influence it. A label is left out of every mean, and named in
    ``excluded`` with the reason, when its test split has a single class (AUROC undefined) or its
    validation split has no positive (no threshold).

    ``n_bootstrap`` > 0 adds percentile intervals at ``level``: ``<metric>_ci`` [lo, hi] per label and
    ``mean_<metric>_ci`` for the macro means, every metric of every label and the means computed on
    the same resamples of the test rows (:func:`ctvlp.eval.metrics.bootstrap_values`): rows drawn
    with replacement, or whole ``clusters`` (N_test,) ids (patients) with all their rows. Thresholds
    stay the validation ones in every resample.

    Returns ``mean_auroc``, ``mean_f1``, ``mean_precision``, ``mean_recall``, ``mean_accuracy``,
    ``mean_balanced_accuracy``, ``labels_in_mean``, ``excluded`` {name: reason} and ``per_label``
    {name: {auroc, f1, precision, recall, accuracy, balanced_accuracy, threshold, n_pos, n}}.
    """
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names must be distinct, got {list(label_names)}")
    scores_val, labels_val = np.asarray(scores_val), np.asarray(labels_val)
    scores_test, labels_test = np.asarray(scores_test), np.asarray(labels_test)
    avail_val = _check_split("validation", scores_val, labels_val, avail_val, len(label_names))
    avail_test = _check_split("test", scores_test, labels_test, avail_test, len(label_names))
    per_label, excluded = {}, {}
    for j, name in enumerate(label_names):
        result = _label_result((scores_val[:, j], labels_val[:, j], avail_val[:, j]),
                               (scores_test[:, j], labels_test[:, j], avail_test[:, j]))
        per_label[name] = result
        if np.isnan(result["auroc"]):
            excluded[name] = f"single class on test ({result['n_pos']} positive of {result['n']})"
        elif np.isnan(result["threshold"]):
            excluded[name] = "no positive on validation: no F1 threshold"
    kept = [n for n in label_names if n not in excluded]
    out = {f"mean_{m}": _mean([per_label[n][m] for n in kept]) for m in METRICS}
    if n_bootstrap > 0:
        thresholds = [per_label[n]["threshold"] for n in label_names]
        in_mean = np.array([n not in excluded for n in label_names])

        def statistic(idx: np.ndarray) -> np.ndarray:  # (L + 1, M): per label, then the macro mean
            rows = np.array([_resampled_metrics(scores_test[idx, j], labels_test[idx, j], avail_test[idx, j], t)
                             for j, t in enumerate(thresholds)])  # (L, M)
            mean = [_mean(list(col)) for col in rows[in_mean].T] if in_mean.any() else [np.nan] * len(METRICS)
            return np.vstack([rows, mean])

        lo, hi = percentile_interval(bootstrap_values(statistic, len(scores_test), n_bootstrap, seed, clusters),
                                     level)  # (L + 1, M) each
        for j, name in enumerate(label_names):
            per_label[name].update({f"{m}_ci": [float(lo[j, k]), float(hi[j, k])] for k, m in enumerate(METRICS)})
        out.update({f"mean_{m}_ci": (float(lo[-1, k]), float(hi[-1, k])) for k, m in enumerate(METRICS)})
    return {**out, "labels_in_mean": kept, "excluded": excluded, "per_label": per_label}


def _resampled_metrics(scores: np.ndarray, labels: np.ndarray, available: np.ndarray, threshold: float,
                       ) -> list[float]:
    """Every metric of :data:`METRICS` of one label on one resample, at the fixed threshold."""
    binary = binary_metrics(scores, labels, threshold, available)
    return [auroc(scores, labels, available), *(binary[m] for m in _THRESHOLD_METRICS)]


def _mean(values: list[float]) -> float:
    """Mean of the finite values, NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
