"""Zero-shot classification from embeddings: prompt-pair scores and the validation/test protocol.

The caller encodes every volume once and every prompt once (see :mod:`ctvlp.eval.prompts`);
everything here works on those embeddings, so it is independent of the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ctvlp.eval.metrics import (auroc, best_f1_threshold, binary_metrics, bootstrap_values, percentile_interval,
                                select_available)
from ctvlp.eval.names import LABEL_HEAD
from ctvlp.eval.prompts import build_prompts

_THRESHOLD_METRICS = ("f1", "precision", "recall", "accuracy", "balanced_accuracy")
METRICS = ("auroc", *_THRESHOLD_METRICS)
"""Every metric reported per label and as a macro mean (``mean_<metric>``)."""


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(T, D) normalised text embeddings, in batches."""
    out = [model.encode_texts(texts[start:start + batch_size]).float().cpu()
           for start in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.cfg.embed_dim)


def zero_shot_scores(image_emb: torch.Tensor | np.ndarray, pos_emb: torch.Tensor | np.ndarray,
                     neg_emb: torch.Tensor | np.ndarray, logit_scale: float | torch.Tensor = 1.0,
                     ) -> torch.Tensor | np.ndarray:
    """(N, L) probability that label l is present in volume n.

    p_nl = exp(t cos(v_n, u+_l)) / (exp(t cos(v_n, u+_l)) + exp(t cos(v_n, u-_l))), the softmax over
    the label's (positive, negative) prompt pair (CT-CLIP, COLIPRI). ``image_emb`` (N, D), ``pos_emb``
    and ``neg_emb`` (L, D), any scale (they are L2-normalised here); ``logit_scale`` is t itself (the
    exponentiated learnt scale), not its log. One float32 matmul for all volumes and prompts; the
    softmax runs in float64 so that t = 100 does not round confident scores to exactly 1 (ties
    that would blunt AUROC). Returns a float64 tensor when ``image_emb`` is a tensor, else a
    float64 numpy array.
    """
    as_numpy = not isinstance(image_emb, torch.Tensor)
    v, pos, neg = (torch.as_tensor(x).float() for x in (image_emb, pos_emb, neg_emb))
    if v.ndim != 2 or pos.ndim != 2 or pos.shape != neg.shape or pos.shape[1] != v.shape[1]:
        raise ValueError(f"need image (N, D), pos and neg (L, D) with one D, got {tuple(v.shape)}, "
                         f"{tuple(pos.shape)}, {tuple(neg.shape)}")
    v = torch.nn.functional.normalize(v, dim=-1)
    prompts = torch.nn.functional.normalize(torch.stack([pos, neg], dim=1), dim=-1)  # (L, 2, D)
    sims = v @ prompts.flatten(0, 1).T  # (N, 2L)
    logits = torch.as_tensor(logit_scale).double() * sims.double().view(v.shape[0], -1, 2)  # (N, L, 2)
    prob = logits.softmax(dim=-1)[..., 0]  # (N, L)
    return prob.numpy() if as_numpy else prob


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


@torch.no_grad()
def prompt_scorer(model, labels: list[str], style, prompts=None):
    """A function image embeddings (N, D) -> (N, L) zero-shot probabilities of ``labels``: every
    prompt of ``style`` (a name in ``prompts``, default the packaged set) encoded once, pooled per label;
    for ``style`` :data:`~ctvlp.eval.prompts.LABEL_HEAD` the model's label head, sigmoid(t cos(v, u_k) + b)
    (ValueError when the model has none)."""
    if style == LABEL_HEAD:
        if not getattr(model.cfg, "label_prompts", False):
            raise ValueError(f"prompt style {LABEL_HEAD!r} scores with the model's label head, and this model has "
                             "none (model.label_prompts: recipe uniferum); use a prompt-pair style such as 'ctclip'")
        device = model.logit_scale.device

        @torch.no_grad()
        def label_head(image_emb: torch.Tensor) -> np.ndarray:
            return torch.sigmoid(model.label_logits(image_emb.to(device), labels)).float().cpu().numpy()

        return label_head
    texts, index = build_prompts(labels, style, prompts)
    pos, neg = index.pool(encode_texts(model, texts))
    scale = float(model.scale())
    return lambda image_emb: zero_shot_scores(image_emb, pos, neg, scale).numpy()
