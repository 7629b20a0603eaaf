"""Classification metrics as pure functions: numpy in, floats out.

Every function takes one label's ``scores`` and ``labels`` (1-D, same length) and an optional
``available`` boolean mask. Entries with ``available == False`` are *dropped* before anything is
computed: a missing label is never a negative. Without a mask, NaN labels are treated as missing.

Predictions are ``score >= threshold`` everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ArrayLike = np.ndarray | list | tuple


def select_available(scores: ArrayLike, labels: ArrayLike, available: ArrayLike | None = None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels as int 0/1) of the available entries; ValueError on bad shapes or values."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must be 1-D of one length, got {scores.shape} and {labels.shape}")
    if available is None:
        mask = ~np.isnan(labels)
    else:
        mask = np.asarray(available)
        if mask.dtype != bool or mask.shape != scores.shape:
            raise ValueError(f"available must be a bool array of shape {scores.shape}, "
                             f"got {mask.dtype} {mask.shape}")
    scores, labels = scores[mask], labels[mask]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError(f"available labels must be 0 or 1, got values {np.unique(labels)[:5]}")
    if np.isnan(scores).any():
        raise ValueError("scores of available entries contain NaN")
    return scores, labels.astype(np.int64)


def auroc(scores: ArrayLike, labels: ArrayLike, available: ArrayLike | None = None) -> float:
    """Area under the ROC curve (ties count one half); NaN when only one class is available."""
    scores, labels = select_available(scores, labels, available)
    if np.unique(labels).size < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score  # on use: importing sklearn takes ~1 s, inference never needs it

    return float(roc_auc_score(labels, scores))


def _ratio(num: float, den: float) -> float:
    """num / den, 0.0 when den is 0 (sklearn's ``zero_division=0``)."""
    return num / den if den else 0.0


def binary_metrics(scores: ArrayLike, labels: ArrayLike, threshold: float,
                   available: ArrayLike | None = None) -> dict[str, float]:
    """f1, precision, recall, accuracy, balanced_accuracy of ``score >= threshold``.

    Precision, recall and F1 are 0 when undefined (no predicted or no true positives);
    balanced accuracy is the mean of sensitivity and specificity over the classes present.
    All NaN when nothing is available or the threshold is NaN.
    """
    scores, labels = select_available(scores, labels, available)
    if labels.size == 0 or np.isnan(threshold):
        return dict.fromkeys(("f1", "precision", "recall", "accuracy", "balanced_accuracy"), float("nan"))
    pred = scores >= threshold
    pos = labels == 1
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    fn, tn = int((~pred & pos).sum()), int((~pred & ~pos).sum())
    per_class = [r for r, n in ((_ratio(tp, tp + fn), tp + fn), (_ratio(tn, tn + fp), tn + fp)) if n]
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "accuracy": (tp + tn) / labels.size,
        "balanced_accuracy": float(np.mean(per_class)),
    }


def best_f1_threshold(scores: ArrayLike, labels: ArrayLike, available: ArrayLike | None = None) -> float:
    """The threshold, among the available scores, whose ``score >= threshold`` has the highest F1.

    Candidates are the distinct available scores (every distinct prediction set is reached by one
    of them). Tie-break: among thresholds with the same F1 (within 1e-12) the *highest* one, i.e.
    the fewest positive predictions. NaN when no positive label is available (F1 is 0 for every
    threshold, so none is better than another).
    """
    scores, labels = select_available(scores, labels, available)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Last position of each run of equal scores: predicting positive down to it = threshold at it.
    last = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])
    tp = np.cumsum(sorted_labels)[last]
    predicted = last + 1
    f1 = 2 * tp / (predicted + n_pos)  # 2TP / (2TP + FP + FN), FP + TP = predicted, TP + FN = n_pos
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[0]  # first = highest threshold
    return float(sorted_scores[last[best]])


def cluster_resampler(n: int, clusters: ArrayLike | None = None,
                      ) -> Callable[[np.random.Generator], np.ndarray]:
    """A function rng -> row indices of one bootstrap resample of ``range(n)``.

    Without ``clusters`` the rows are drawn with replacement (``rng.integers(0, n, n)``). With
    ``clusters`` (N,) ids (e.g. patients: CT-RATE has several reconstructions per scan and several
    scans per patient), the C distinct clusters are drawn with replacement (``rng.integers(0, C, C)``,
    clusters numbered in sorted id order) and every row of each drawn cluster is taken, in row order,
    once per draw. When every row is its own cluster, in row order, both give the same indices.
    """
    if n < 1:
        raise ValueError(f"need n >= 1, got {n}")
    if clusters is None:
        return lambda rng: rng.integers(0, n, n)
    clusters = np.asarray(clusters)
    if clusters.shape != (n,):
        raise ValueError(f"clusters must have shape ({n},), got {clusters.shape}")
    codes = np.unique(clusters, return_inverse=True)[1].reshape(n)  # (N,) cluster number per row
    order = np.argsort(codes, kind="stable")  # rows grouped by cluster, row order within a cluster
    sizes = np.bincount(codes)  # (C,)
    starts = np.cumsum(sizes) - sizes  # (C,) first position of each cluster in ``order``

    def draw(rng: np.random.Generator) -> np.ndarray:
        picked = rng.integers(0, sizes.size, sizes.size)  # (C,) clusters with replacement
        take = sizes[picked]
        offset = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)  # position within cluster
        return order[np.repeat(starts[picked], take) + offset]

    return draw


def bootstrap_values(statistic: Callable[[np.ndarray], float | np.ndarray], n: int, n_boot: int = 1000,
                     seed: int = 0, clusters: ArrayLike | None = None) -> np.ndarray:
    """(n_boot, *S) values of ``statistic(indices)`` over resamples of ``range(n)``, drawn by
    :func:`cluster_resampler` (rows, or whole clusters when ``clusters`` is given); ``statistic``
    returns a float or an array of shape S (several statistics from one resample)."""
    if n_boot < 1:
        raise ValueError(f"need n_boot >= 1, got {n_boot}")
    draw = cluster_resampler(n, clusters)
    rng = np.random.default_rng(seed)
    return np.array([np.asarray(statistic(draw(rng)), dtype=np.float64) for _ in range(n_boot)])


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi), each of shape ``values.shape[1:]``: the percentile interval of each column of
    bootstrap ``values`` (n_boot, ...), non-finite values dropped per column (NaN when none is left)."""
    if not 0 < level < 1:
        raise ValueError(f"need 0 < level < 1, got {level}")
    values = np.where(np.isfinite(values), values, np.nan)
    tail = (1 - level) / 2 * 100
    empty = np.isnan(values).all(axis=0)
    filled = np.where(empty, 0.0, values)  # nanpercentile warns on all-NaN columns
    lo, hi = np.nanpercentile(filled, [tail, 100 - tail], axis=0)
    return np.where(empty, np.nan, lo), np.where(empty, np.nan, hi)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, clusters: ArrayLike | None = None) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over ``n_boot`` resamples of ``range(n)``.

    ``statistic`` receives row indices drawn with replacement -- whole clusters of rows when
    ``clusters`` (N,) is given, see :func:`cluster_resampler` -- and returns a float (NaN results,
    e.g. a resample with one class only, are dropped). (NaN, NaN) when every resample is NaN.
    """
    if n < 1 or n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1, n_boot >= 1 and 0 < level < 1, got {n}, {n_boot}, {level}")
    lo, hi = percentile_interval(bootstrap_values(statistic, n, n_boot, seed, clusters), level)
    return float(lo), float(hi)


