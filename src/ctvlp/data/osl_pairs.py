"""Sentence pairs for COLIPRI's Opposite Sentence Loss (the paper's Algorithm 1, as re-implemented by a
third party; see ``ctvlp.losses.opposite_sentence``), built from free-text reports with the rule-based
parser of ``ctvlp.data.reports``. Data side: numpy only, no torch.

For each image of a batch, K slots of sentence pairs (s+, s-) with s- = ``opposite_sentence(s+)``:

- slots ``0 .. ceil(K/2) - 1`` are *true* pairs: s+ is one of the patient's own positive findings
  (drawn without replacement), so s+ describes the image and s- does not;
- slots ``ceil(K/2) .. K - 1`` are *false* pairs: s+ is another patient's positive finding about an
  organ (the lexicon's organs stand in for the paper's anatomical sections) where this patient has no
  positive finding, so s+ does not describe the image and its negation s- does.

A *positive finding* is a sentence of the report's findings section (``sections``) that names at least
one organ, does not parse as negated (``is_negated``) and whose opposite does parse as negated, so that
every pair really is (statement, its negation) for the parser. Sentences are deduplicated by text.

Slots that cannot be filled (a patient with fewer positive findings than ceil(K/2), a batch without
enough other-organ findings for the false pairs, e.g. a batch of one or of normal scans only) get
empty texts and ``valid = False``; the slot layout, and so ``is_true``, never changes. The loss takes
``valid`` as its pair mask; a caller may also encode only the valid texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ctvlp.data.reports import is_negated, opposite_sentence, parse_report, split_sections


@dataclass(frozen=True)
class PositiveFinding:
    """A positive finding sentence, the organs it speaks about and its negation."""

    text: str
    organs: frozenset[str]
    negation: str


class OslPairs(NamedTuple):
    """K slots per image, each a nested list of shape [B][K]."""

    pos_texts: list[list[str]]
    """s+ of every slot ("" where invalid)."""
    neg_texts: list[list[str]]
    """s- = opposite_sentence(s+) ("" where invalid)."""
    is_true: list[list[bool]]
    """True for slots 0 .. ceil(K/2) - 1 (s+ is the image's own finding), False after."""
    valid: list[list[bool]]
    """True where the slot holds a pair."""


def positive_findings(report: str, sections: Sequence[str] = ("findings",)) -> list[PositiveFinding]:
    """The positive findings of a report's ``sections`` (see the module docstring), in report order.
    Cached per (report, sections): a report's findings are parsed once per process, not once per batch."""
    return list(_positive_findings(report, tuple(sections)))


@lru_cache(maxsize=1 << 16)
def _positive_findings(report: str, sections: tuple[str, ...]) -> tuple[PositiveFinding, ...]:
    parts = split_sections(report)
    text = "\n".join(parts[name] for name in sections if name in parts)
    organs: dict[str, set[str]] = {}  # positive sentence -> organs, in report order, deduplicated
    for sentence in parse_report(text):
        if sentence.organs and not sentence.negated:
            organs.setdefault(sentence.text, set()).update(sentence.organs)
    out = []
    for sentence, names in organs.items():
        negation = opposite_sentence(sentence)
        if negation and is_negated(negation):
            out.append(PositiveFinding(sentence, frozenset(names), negation))
    return tuple(out)


def build_osl_pairs(reports: Sequence[str], k: int = 8, rng: np.random.Generator | int | None = None,
                    sections: Sequence[str] = ("findings",)) -> OslPairs:
    """OSL sentence pairs for a batch of reports: ``(pos_texts, neg_texts, is_true, valid)``, each [B][K].

    ``rng``: a numpy Generator, or a seed for one. See the module docstring for the slot layout.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_true, n_false = (k + 1) // 2, k // 2
    found = [positive_findings(r, sections) for r in reports]
    positive_organs = [frozenset().union(*(f.organs for f in own)) for own in found]
    pairs = OslPairs([], [], [], [])
    for i, own in enumerate(found):
        own_texts = {f.text for f in own}
        candidates: dict[str, PositiveFinding] = {}  # other patients' findings about organs i has none in
        for j, theirs in enumerate(found):
            if j == i:
                continue
            for f in theirs:
                if f.text not in own_texts and not f.organs & positive_organs[i]:
                    candidates.setdefault(f.text, f)
        pool = list(candidates.values())
        true = [own[t] for t in rng.choice(len(own), size=min(n_true, len(own)), replace=False)]
        false = [pool[t] for t in rng.choice(len(pool), size=min(n_false, len(pool)), replace=False)]
        slots = true + [None] * (n_true - len(true)) + false + [None] * (n_false - len(false))
        pairs.pos_texts.append([f.text if f else "" for f in slots])
        pairs.neg_texts.append([f.negation if f else "" for f in slots])
        pairs.is_true.append([s < n_true for s in range(k)])
        pairs.valid.append([f is not None for f in slots])
    return pairs
