"""Linear probe: one logistic regression per label on frozen image embeddings.

Protocol (per label, only volumes with the label available):

* features: the L2-normalised image embeddings, standardised with the training split's mean and
  standard deviation (``StandardScaler`` fitted on train only);
* model: scikit-learn ``LogisticRegression`` (L2 penalty, lbfgs, ``max_iter=2000``) fitted on the
  training split;
* C: chosen from :data:`C_GRID` by AUROC on the validation split (ties: the smaller C, the stronger
  regularisation); :data:`DEFAULT_C` when the validation split has a single class for the label;
* score: AUROC on the test split of the model fitted on train with the chosen C (never refitted on
  validation or test), with a bootstrap interval over test rows (whole clusters: patients).

A label is skipped (named in ``excluded``) when its training split has a single class (nothing to
fit) or its test split has a single class (AUROC undefined).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ctvlp.eval.metrics import auroc, bootstrap_values, percentile_interval

C_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried on the validation split."""
DEFAULT_C = 1.0
"""C used when the validation split cannot rank the grid (a single class)."""
RULE = ("per label: StandardScaler + LogisticRegression(L2, lbfgs, max_iter=2000) on normalised train-split "
        "image embeddings; C from the grid by validation AUROC (ties: smaller C; DEFAULT_C when validation has "
        "one class); AUROC on test")



def shuffled_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of row indices 0..n-1 in a seeded random order, reshuffled each pass (a batch may span
    two passes): how the trained probes (segmentation, report generation) draw their training samples."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order.extend(rng.permutation(n).tolist())
        rows, order = order[:batch_size], order[batch_size:]
        yield rows

@dataclass
class Split:
    """One split's (N, D) features and (N, L) labels and availability."""

    x: np.ndarray
    labels: np.ndarray
    available: np.ndarray

    def label(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(x, y int) of the rows with label ``j`` available."""
        rows = np.asarray(self.available[:, j], dtype=bool)
        return self.x[rows], np.asarray(self.labels[rows, j]).astype(np.int64)


def fit_probe(x: np.ndarray, y: np.ndarray, c: float) -> Pipeline:
    """The probe of one label: standardise, then L2 logistic regression with inverse strength ``c``."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def choose_c(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
             grid: Sequence[float] = C_GRID) -> tuple[float, float, Pipeline]:
    """(C, its validation AUROC (NaN when undefined), the probe fitted on train with it)."""
    if np.unique(val[1]).size < 2:
        return DEFAULT_C, float("nan"), fit_probe(*train, DEFAULT_C)
    fits = [(c, fit_probe(*train, c)) for c in sorted(grid)]
    scores = [auroc(m.decision_function(val[0]), val[1]) for _, m in fits]
    best = int(np.argmax(scores))  # first maximum = smallest C among ties
    return fits[best][0], scores[best], fits[best][1]


@dataclass
class FittedProbes:
    """The per-label probes of :func:`fit_probes`: ``models`` {label: fitted pipeline} for the labels whose
    training split has both classes, their ``c`` and ``val_auroc``, and ``excluded`` {label: why not fitted}."""

    label_names: list[str]
    models: dict
    c: dict
    val_auroc: dict
    excluded: dict

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(N, L) decision values of (N, D) embeddings (L2-normalised here), NaN for unfitted labels."""
        x = _normalise(x)
        out = np.full((len(x), len(self.label_names)), np.nan)
        for j, name in enumerate(self.label_names):
            if name in self.models:
                out[:, j] = self.models[name].decision_function(x)
        return out


def fit_probes(train: Split, val: Split, label_names: Sequence[str], grid: Sequence[float] = C_GRID) -> FittedProbes:
    """Fit every label's probe on ``train`` with C chosen on ``val`` (module docstring)."""
    train, val = (Split(_normalise(s.x), s.labels, s.available) for s in (train, val))
    fitted = FittedProbes(list(label_names), {}, {}, {}, {})
    for j, name in enumerate(label_names):
        (xt, yt), (xv, yv) = train.label(j), val.label(j)
        if np.unique(yt).size < 2:
            fitted.excluded[name] = f"single class on train ({int(yt.sum())} positive of {yt.size})"
            continue
        fitted.c[name], fitted.val_auroc[name], fitted.models[name] = choose_c((xt, yt), (xv, yv), grid)
    return fitted


def linear_probe(train: Split, val: Split, test: Split, label_names: Sequence[str], grid: Sequence[float] = C_GRID,
                 n_bootstrap: int = 0, seed: int = 0, clusters: Sequence | np.ndarray | None = None,
                 level: float = 0.95) -> dict:
    """Probe every label (module docstring). ``clusters`` (N_test,) ids for the bootstrap (patients).

    Returns ``mean_auroc`` (macro over ``labels_in_mean``), ``labels_in_mean``, ``excluded``
    {name: reason}, ``per_label`` {name: {auroc, C, val_auroc, n, n_pos}}, ``c_grid``, ``rule``, and
    with ``n_bootstrap`` > 0 ``per_label[name]["auroc_ci"]`` and ``mean_auroc_ci``.
    """
    fitted = fit_probes(train, val, label_names, grid)
    test_scores = fitted.scores(test.x)  # (N_test, L)
    per_label, excluded = {}, dict(fitted.excluded)
    for j, name in enumerate(label_names):
        if name in excluded:
            continue
        ys = test.label(j)[1]
        per_label[name] = {"auroc": auroc(test_scores[:, j], test.labels[:, j], test.available[:, j]),
                           "C": fitted.c[name], "val_auroc": fitted.val_auroc[name], "n": int(ys.size),
                           "n_pos": int(ys.sum())}
        if np.isnan(per_label[name]["auroc"]):
            excluded[name] = f"single class on test ({int(ys.sum())} positive of {ys.size})"
    kept = [n for n in label_names if n not in excluded]
    cols = [list(label_names).index(n) for n in kept]
    out = {"mean_auroc": float(np.mean([per_label[n]["auroc"] for n in kept])) if kept else float("nan")}
    if n_bootstrap > 0 and kept:
        def statistic(idx: np.ndarray) -> np.ndarray:  # (K + 1,): kept labels, then their mean
            values = [auroc(test_scores[idx, j], test.labels[idx, j], test.available[idx, j]) for j in cols]
            finite = [v for v in values if np.isfinite(v)]
            return np.array([*values, np.mean(finite) if finite else np.nan])

        lo, hi = percentile_interval(bootstrap_values(statistic, len(test.x), n_bootstrap, seed, clusters), level)
        for k, name in enumerate(kept):
            per_label[name]["auroc_ci"] = [float(lo[k]), float(hi[k])]
        out["mean_auroc_ci"] = [float(lo[-1]), float(hi[-1])]
    return {**out, "labels_in_mean": kept, "excluded": excluded, "per_label": per_label, "c_grid": list(grid),
            "rule": RULE}
