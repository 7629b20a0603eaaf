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
every pair really is (statement, its negation) for the parser, and that is none of (``is_finding``):

- a device (CT-RATE's "Medical material": "A venous port is seen in the right chest wall."): a device is
  no finding of an organ, and COLIPRI's pairs never hold one;
- a normal statement the negation lexicon misses: CT-RATE's translations write "natural" for normal
  ("Bone structures in the study area are natural.");
- a fragment cut at a semicolon or colon ("When examined in the lung parenchyma window;"), whose
  "negation" ("No when examined ...") means nothing;
- a recommendation ("Further examination is recommended for possible pancreatitis.").

Sentences are deduplicated by text.

The reports must be the plain report text (CT-RATE's findings), not the structured text COLIPRI's
towers read ("Heart: positive: The heart is enlarged."): its lines would become s+ whole, prefix and
all, and their "negations" ("Heart: positive: The heart is not enlarged.") contradict themselves. The
trainer passes each sample's plain ``findings``. Measured on CT-RATE's 323 distinct validation findings
(``tests/test_losses_colipri.py``): 1,347 positive findings, none prefixed, none a device (713 of them
state one of CT-RATE's 18 abnormalities; the others are findings such as "The left kidney is
atrophic."; the parser's rules alone, without ``is_finding``, pass 1,904); drawn from the structured
text as before, 2,342, of which 1,363 carried a "<Organ>: positive:" prefix and 18 spoke of a device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import re

import numpy as np

from ctvlp.data.reports import is_negated, opposite_sentence, parse_report, sentence_findings, split_sections

DEVICE = "Medical material"
"""The CT-RATE label of devices (ports, catheters, stents, pacemakers, clips): its sentences never enter a pair."""


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
        if sentence.organs and not sentence.negated and is_finding(sentence.text):
            organs.setdefault(sentence.text, set()).update(sentence.organs)
    out = []
    for sentence, names in organs.items():
        negation = opposite_sentence(sentence)
        if negation and is_negated(negation):
            out.append(PositiveFinding(sentence, frozenset(names), negation))
    return tuple(out)


def is_device(sentence: str) -> bool:
    """Whether ``sentence`` mentions a device (the lexicon's "Medical material" patterns)."""
    return any(label == DEVICE for label, _ in sentence_findings(sentence))


_NOT_A_FINDING = re.compile(
    r"\b(?:natural\w*|normal\w*|unremarkable|within (?:the )?normal limits|recommend\w*)\b", re.I)


def is_finding(sentence: str) -> bool:
    """Whether a non-negated organ sentence can be a positive finding: no device; then either it states
    one of CT-RATE's abnormalities present (whatever else it says: "Heart contour is natural, plaques
    are seen in the aorta."), or it is no normal statement ("natural"), no recommendation and no fragment
    ending at a semicolon, colon or comma."""
    found = sentence_findings(sentence)
    if any(label == DEVICE for label, _ in found):
        return False
    if any(present for _, present in found):
        return True
    text = sentence.strip().rstrip(".").rstrip()
    return bool(text) and not text.endswith((";", ":", ",")) and not _NOT_A_FINDING.search(text)


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
