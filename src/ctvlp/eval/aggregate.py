"""Volume level -> scan level: CT-RATE has several reconstructions (volumes) of one scan.

Rules (the same for every task that reports a scan level):

* **score** of a scan = the mean of its reconstructions' scores (per label);
* **label** of a scan = positive when any of its reconstructions with the label available is positive,
  available when any of them is (CT-RATE labels a scan's reconstructions identically, from its one
  report, so this is the scan's label);
* **embedding** of a scan = the L2-normalised mean of its reconstructions' L2-normalised embeddings
  (images and reports alike; a scan's reconstructions share one report).

Scans are listed in order of first appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

RULE = ("scan score = mean of its reconstructions' scores; scan label = positive if any available "
        "reconstruction is positive (CT-RATE labels them identically); scan embedding = normalised mean "
        "of its reconstructions' normalised embeddings")


@dataclass(frozen=True)
class Grouping:
    """Rows (volumes) -> groups (scans)."""

    names: list[str]
    """(G,) group ids in order of first appearance."""
    codes: np.ndarray
    """(N,) int: the group of each row."""
    first: np.ndarray
    """(G,) int: each group's first row (for per-group attributes such as the patient)."""

    @classmethod
    def of(cls, keys: Sequence[str]) -> Grouping:
        codes, names = pd.factorize(np.asarray(keys))  # codes numbered in order of first appearance
        if codes.ndim != 1 or codes.size == 0:
            raise ValueError(f"need a non-empty 1-D sequence of group ids, got shape {codes.shape}")
        return cls(names=[str(k) for k in names], codes=codes, first=np.unique(codes, return_index=True)[1])

    def mean(self, values: np.ndarray) -> np.ndarray:
        """(G, ...) mean of ``values`` (N, ...) over each group's rows."""
        values = np.asarray(values, dtype=np.float64)
        sums = np.zeros((len(self.names), *values.shape[1:]))
        np.add.at(sums, self.codes, values)
        return sums / np.bincount(self.codes, minlength=len(self.names)).reshape(-1, *[1] * (values.ndim - 1))


def scan_scores(scores: np.ndarray, labels: np.ndarray, available: np.ndarray, grouping: Grouping,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, labels, available), each (G, L), of the groups from the rows' (N, L) arrays (module rules)."""
    available = np.asarray(available, dtype=bool)
    positive = (np.asarray(labels) == 1) & available  # (N, L)
    n_avail = np.zeros((len(grouping.names), available.shape[1]), dtype=np.int64)
    n_pos = np.zeros_like(n_avail)
    np.add.at(n_avail, grouping.codes, available)
    np.add.at(n_pos, grouping.codes, positive)
    return grouping.mean(scores), (n_pos > 0).astype(np.float32), n_avail > 0


def scan_embeddings(emb: torch.Tensor | np.ndarray, grouping: Grouping) -> torch.Tensor:
    """(G, D) normalised mean of each group's normalised (N, D) embeddings."""
    emb = torch.nn.functional.normalize(torch.as_tensor(emb).float(), dim=-1)
    sums = emb.new_zeros(len(grouping.names), emb.shape[1]).index_add_(0, torch.as_tensor(grouping.codes), emb)
    return torch.nn.functional.normalize(sums, dim=-1)
