"""Retrieval at CT-RATE's scale: ranks of 10,000 queries against 10,000 items, and their intervals.

    python benchmarks/retrieval_scale.py [--n 10000] [--dim 512] [--repeats 3]

Times, on random paired embeddings (text = image + noise, so recall is above chance):
* ``ranks``: :func:`ctvlp.eval.retrieval.retrieval_ranks` without groups (chunked (C, N) matmuls, ranks by
  counting, no sort);
* ``ranks_grouped``: the same with two reconstructions per scan (group-aware ranks);
* ``intervals``: :func:`ctvlp.eval.retrieval.recall_intervals`, 1000 patient resamples (3 rows per patient).
Goal (issue 5): 10,000 x 10,000 in seconds. Results: benchmarks/results/retrieval_scale-<date>.json.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from machine import median_seconds, save_result

from ctvlp.eval.retrieval import rank_summary, recall_intervals, retrieval_ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(args.n, args.dim, generator=g)
    text = image + 2 * torch.randn(args.n, args.dim, generator=g)
    groups = np.arange(args.n) // 2
    ranks = retrieval_ranks(image, text)
    seconds = {
        "ranks": median_seconds(lambda: retrieval_ranks(image, text), args.repeats),
        "ranks_grouped": median_seconds(lambda: retrieval_ranks(image, text, groups=groups), args.repeats),
        "intervals": median_seconds(lambda: recall_intervals(ranks, n_bootstrap=1000, clusters=np.arange(args.n) // 3),
                                    args.repeats),
    }
    summary = rank_summary(ranks, (1, 5, 10, 50))
    print(f"torch threads {torch.get_num_threads()}; {args.n:,} x {args.n:,}, D = {args.dim}")
    for name, s in seconds.items():
        print(f"  {name:14} {s:6.2f} s")
    print(f"  recall@1 {summary['recall@1']:.3f}, recall@50 {summary['recall@50']:.3f}")
    save_result("retrieval_scale", {"n": args.n, "dim": args.dim, "repeats": args.repeats, "seconds": seconds,
                                    "recall": {k: v for k, v in summary.items() if k.startswith("recall@")}})


if __name__ == "__main__":
    main()
