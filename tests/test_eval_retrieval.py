"""Retrieval: counting ranks vs a brute-force argsort, pessimistic ties, groups, 10,000 x 10,000 speed."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from ctvlp.eval.retrieval import retrieval_both, retrieval_metrics, retrieval_ranks


def reference_ranks(query, gallery, groups=None):
    """Sort the whole gallery for each query (float64); on equal scores the query's own items go
    last (pessimistic). Rank = 1 + position of the first item of the query's group."""
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    groups = np.arange(len(q)) if groups is None else np.asarray(groups)
    ranks = []
    for i in range(len(q)):
        member = groups == groups[i]
        order = np.lexsort((member, -(g @ q[i])))  # primary: score descending; ties: members last
        ranks.append(1 + int(np.flatnonzero(member[order])[0]))
    return np.array(ranks)


def exact_tie_embeddings(rng, n, d=8):
    """Rows with four entries of +-0.5 and the rest 0: unit norm and dot products that are exact
    multiples of 0.25 in any precision and summation order, so ties are real ties."""
    out = np.zeros((n, d))
    for row in out:
        row[rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return out


def test_golden_pessimistic_ties_and_groups():
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert retrieval_ranks(emb, emb).tolist() == [2, 2, 1]  # the duplicate is ranked first
    assert retrieval_ranks(emb, emb, groups=["s1", "s1", "s2"]).tolist() == [1, 1, 1]
    m = retrieval_metrics(emb, emb, ks=(1, 2))
    assert m == pytest.approx({"recall@1": 1 / 3, "recall@2": 1.0, "median_rank": 2.0,
                               "mean_rank": 5 / 3, "n": 3})
    constant = np.ones((5, 3))
    assert retrieval_ranks(constant, constant).tolist() == [5] * 5  # never a free hit


@pytest.mark.parametrize("seed", range(3))
def test_ranks_match_brute_force_on_random_data(seed):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(150, 16))
    gallery = query + rng.normal(size=(150, 16)) * 1.5
    expected = reference_ranks(query, gallery)
    assert retrieval_ranks(query, gallery, chunk=32).tolist() == expected.tolist()
    metrics = retrieval_metrics(query, gallery, ks=(1, 5, 10, 50))
    for k in (1, 5, 10, 50):
        assert metrics[f"recall@{k}"] == pytest.approx((expected <= k).mean())
    assert metrics["median_rank"] == np.median(expected) and metrics["mean_rank"] == pytest.approx(expected.mean())


@pytest.mark.parametrize("seed", range(3))
def test_ranks_match_brute_force_with_exact_ties(seed):
    rng = np.random.default_rng(seed)
    query, gallery = exact_tie_embeddings(rng, 200), exact_tie_embeddings(rng, 200)
    gallery[::3] = query[::3]  # some exact pairs
    expected = reference_ranks(query, gallery)
    scores = query @ gallery.T
    assert (scores == np.diag(scores)[:, None]).sum() > 2 * len(scores)  # ties really happen
    for chunk in (1, 17, 1024):
        assert retrieval_ranks(query, gallery, chunk=chunk).tolist() == expected.tolist()
    optimistic = 1 + (scores > np.diag(scores)[:, None]).sum(axis=1)
    assert (expected >= optimistic).all() and (expected > optimistic).any()


@pytest.mark.parametrize("seed", range(3))
def test_groups_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 60, 150)  # several reconstructions of one scan share a group
    query, gallery = exact_tie_embeddings(rng, 150), exact_tie_embeddings(rng, 150)
    expected = reference_ranks(query, gallery, groups)
    assert retrieval_ranks(query, gallery, groups=groups, chunk=16).tolist() == expected.tolist()
    assert (expected <= reference_ranks(query, gallery)).all()  # a group only ever helps
    names = np.array([f"scan{g}" for g in groups])
    assert retrieval_ranks(query, gallery, groups=names).tolist() == expected.tolist()


def test_retrieval_both_directions_and_torch_input():
    rng = np.random.default_rng(0)
    image, text = rng.normal(size=(80, 8)), rng.normal(size=(80, 8))
    both = retrieval_both(torch.from_numpy(image), torch.from_numpy(text), ks=(1, 5))
    assert set(both) == {"volume_to_report", "report_to_volume"}
    assert both["volume_to_report"] == retrieval_metrics(image, text, ks=(1, 5))
    assert both["report_to_volume"] == retrieval_metrics(text, image, ks=(1, 5))
    assert both["volume_to_report"] != both["report_to_volume"]


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.zeros((4, 3)), np.zeros((5, 3))), {}, "one shape"),
    ((np.zeros((0, 3)), np.zeros((0, 3))), {}, "N > 0"),
    ((np.zeros(4), np.zeros(4)), {}, "one shape"),
    ((np.ones((4, 3)), np.ones((4, 3))), {"groups": [0, 1]}, r"groups must have shape \(4,\)"),
    ((np.ones((4, 3)), np.ones((4, 3))), {"ks": (0, 5)}, "positive integers"),
])
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(*args, **kwargs)


def test_large_gallery_in_chunks_with_groups():
    """3,000 pairs in chunks of 1,024 (three partial chunks); the speed at 10,000 is benchmarks/retrieval_scale.py."""
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(3_000, 64, generator=gen)
    text = image + torch.randn(3_000, 64, generator=gen) * 2
    metrics = retrieval_metrics(image, text)
    assert metrics["n"] == 3_000 and 0 < metrics["recall@1"] < metrics["recall@50"] <= 1
    assert metrics == retrieval_metrics(image, text, chunk=3_000)  # chunking changes nothing
    grouped = retrieval_metrics(image, text, groups=(torch.arange(3_000) // 2).numpy())  # two reconstructions per scan
    assert grouped["recall@1"] >= metrics["recall@1"]