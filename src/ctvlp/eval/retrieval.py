"""Cross-modal retrieval from paired embeddings: recall@k and ranks, volume->report and back.

Query i's correct item is gallery item i (the pairs come from one manifest). Similarity is the
cosine. Ranks are computed without sorting, by counting, over chunks of queries, so memory stays at
(chunk, N) float32 and 10,000 x 10,000 takes about a second on a laptop CPU.

Ties are counted *pessimistically*: an item scoring exactly as high as the correct one ranks before
it, so rank_i = #{j : s_ij >= s_ii} (a constant embedding gets rank N, never 1).

Groups: when several queries belong to one item (several reconstructions of one scan share one
report), pass ``groups`` (N,), one id per pair. Retrieval of any member of the query's group is a
hit: rank_i = 1 + #{j not in group(i) : s_ij >= max_{m in group(i)} s_im}, i.e. the position of the
first group member, with the other group members never counted against it. Without groups every
pair is its own group and this is the formula above.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ctvlp.eval.metrics import bootstrap_values, percentile_interval

DEFAULT_KS = (1, 5, 10, 50)


def _normalised(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """L2-normalised float32 tensor."""
    return torch.nn.functional.normalize(torch.as_tensor(x).float(), dim=-1)


def _group_codes(groups: Sequence | np.ndarray | None, n: int) -> torch.Tensor | None:
    """(N,) integer group code per pair, or None without groups."""
    if groups is None:
        return None
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    return torch.as_tensor(np.unique(groups, return_inverse=True)[1].reshape(n))


def _chunk_ranks(sims: torch.Tensor, rows: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """(C,) pessimistic ranks of the queries ``rows`` from their (C, N) similarities."""
    if codes is None:
        own = sims.gather(1, rows[:, None])  # (C, 1) score of the query's own pair, from the same matmul
        return (sims >= own).sum(dim=1)
    member = codes[rows, None] == codes[None, :]  # (C, N) gallery items of the query's group
    best = sims.masked_fill(~member, float("-inf")).amax(dim=1, keepdim=True)  # (C, 1)
    return 1 + ((sims >= best) & ~member).sum(dim=1)


def retrieval_ranks(query_emb: torch.Tensor | np.ndarray, gallery_emb: torch.Tensor | np.ndarray,
                    groups: Sequence | np.ndarray | None = None, chunk: int = 1024) -> np.ndarray:
    """(N,) int64 pessimistic rank (1 = first) of query i's correct item in the gallery."""
    q, g = _normalised(query_emb), _normalised(gallery_emb)
    if q.ndim != 2 or q.shape != g.shape or q.shape[0] == 0:
        raise ValueError(f"query and gallery must be (N, D) of one shape with N > 0, "
                         f"got {tuple(q.shape)} and {tuple(g.shape)}")
    codes = _group_codes(groups, q.shape[0])
    ranks = torch.empty(q.shape[0], dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, q.shape[0], chunk):
            stop = min(start + chunk, q.shape[0])
            sims = q[start:stop] @ g.T  # (C, N)
            ranks[start:stop] = _chunk_ranks(sims, torch.arange(start, stop), codes)
    return ranks.numpy()


def retrieval_metrics(query_emb: torch.Tensor | np.ndarray, gallery_emb: torch.Tensor | np.ndarray,
                      ks: Sequence[int] = DEFAULT_KS, groups: Sequence | np.ndarray | None = None,
                      chunk: int = 1024) -> dict[str, float]:
    """``recall@k`` for every k (fraction of queries with rank <= k), ``median_rank``, ``mean_rank``
    and ``n``; ranks as in :func:`retrieval_ranks` (pessimistic ties, optional groups)."""
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    return rank_summary(retrieval_ranks(query_emb, gallery_emb, groups, chunk), ks)


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``recall@k`` (fraction of ranks <= k), ``median_rank``, ``mean_rank`` and ``n`` of (N,) ranks."""
    ranks = np.asarray(ranks)
    out = {f"recall@{int(k)}": float((ranks <= int(k)).mean()) for k in ks}
    out.update(median_rank=float(np.median(ranks)), mean_rank=float(ranks.mean()), n=int(ranks.size))
    return out


def retrieval_both(image_emb: torch.Tensor | np.ndarray, text_emb: torch.Tensor | np.ndarray,
                   ks: Sequence[int] = DEFAULT_KS, groups: Sequence | np.ndarray | None = None,
                   ) -> dict[str, dict[str, float]]:
    """{"volume_to_report": metrics with volumes as queries, "report_to_volume": the reverse}."""
    return {"volume_to_report": retrieval_metrics(image_emb, text_emb, ks, groups),
            "report_to_volume": retrieval_metrics(text_emb, image_emb, ks, groups)}


def recall_intervals(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS, n_bootstrap: int = 1000, seed: int = 0,
                     clusters: Sequence | np.ndarray | None = None, level: float = 0.95) -> dict[str, list[float]]:
    """``recall@k_ci`` and ``median_rank_ci``: percentile intervals over resamples of the *queries*
    (whole ``clusters``, e.g. patients, when given); the ranks come from the full gallery and are
    not recomputed, i.e. the gallery is held fixed and only which queries are asked varies."""
    ranks = np.asarray(ranks)
    ks = [int(k) for k in ks]

    def statistic(idx: np.ndarray) -> np.ndarray:  # (K + 1,)
        return np.array([*((ranks[idx] <= k).mean() for k in ks), np.median(ranks[idx])])

    lo, hi = percentile_interval(bootstrap_values(statistic, ranks.size, n_bootstrap, seed, clusters), level)
    names = [f"recall@{k}_ci" for k in ks] + ["median_rank_ci"]
    return {name: [float(a), float(b)] for name, a, b in zip(names, lo, hi)}
