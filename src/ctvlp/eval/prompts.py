"""Zero-shot prompt styles: label names -> positive and negative sentences, and back.

The styles live in ``ctvlp/data/resources/prompts.yaml`` (its header explains the fields); a user
file with the same layout replaces it. :func:`build_prompts` returns the flat list of texts to
encode once and a :class:`PromptIndex` that maps every text back to (label, polarity, template) and
pools the text embeddings into one positive and one negative embedding per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml

from ctvlp.errors import CtvlpError

_CASES = ("as_is", "lower")
LABEL_HEAD = "label_head"
"""The style name that scores each label with the model's own label head instead of prompt pairs:
sigmoid(t cos(v, u_k) + b), u_k the embedding of "<label>." (Uniferum's labels as prompts; models
built with ``label_prompts``)."""


@dataclass(frozen=True)
class PromptStyle:
    """One way of writing a label as a positive and a negative sentence."""

    positive: tuple[str, ...]
    """Templates stating the finding is present (``{label}`` / ``{Label}`` fields); may be empty
    (with ``negative``) when ``templates`` gives every label its own: the style then covers only those."""
    negative: tuple[str, ...]
    """Templates stating the finding is absent."""
    case: str = "as_is"
    """Default phrase of a label: the name as written (``as_is``) or lower-cased (``lower``)."""
    phrases: dict[str, str] = field(default_factory=dict)
    """Label -> phrase used instead of the default one."""
    templates: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    """Label -> {"positive": (...), "negative": (...)} replacing the style's templates for it."""

    def __post_init__(self):
        if self.case not in _CASES:
            raise ValueError(f"case must be one of {_CASES}, got {self.case!r}")
        # The style-level pair is required unless per-label templates stand in for it.
        generic = ({} if self.templates and not (self.positive or self.negative)
                   else {"(style)": {"positive": self.positive, "negative": self.negative}})
        for name, pair in {**generic, **self.templates}.items():
            if set(pair) != {"positive", "negative"} or not pair["positive"] or not pair["negative"]:
                raise ValueError(f"{name}: needs at least one positive and one negative template")
            for template in (*pair["positive"], *pair["negative"]):
                try:
                    template.format(label="x", Label="X")
                except (KeyError, IndexError, ValueError) as err:
                    raise ValueError(f"{name}: template {template!r} may only use {{label}} and "
                                     f"{{Label}} ({err!r})") from None

    def phrase(self, label: str) -> str:
        """How ``label`` is written inside a sentence."""
        if label in self.phrases:
            return self.phrases[label]
        return label.lower() if self.case == "lower" else label

    def covers(self, label: str) -> bool:
        """Whether the style has templates for ``label`` (its own, or the style's)."""
        return label in self.templates or bool(self.positive)

    def sentences(self, label: str, positive: bool) -> list[tuple[str, str]]:
        """(template, text) for every template of ``label`` with the given polarity."""
        if not self.covers(label):
            raise ValueError(f"the prompt style has no templates for label {label!r}")
        pair = self.templates.get(label, {"positive": self.positive, "negative": self.negative})
        phrase = self.phrase(label)
        cap = phrase[:1].upper() + phrase[1:]
        return [(t, t.format(label=phrase, Label=cap)) for t in pair["positive" if positive else "negative"]]


@dataclass(frozen=True)
class PromptSet:
    """Named prompt styles (``ctclip``, ``colipri``, ``ensemble`` in the packaged file)."""

    styles: dict[str, PromptStyle]
    """Style name -> style."""

    def style(self, name: str) -> PromptStyle:
        """The style called ``name``; ValueError naming the known ones otherwise."""
        if name not in self.styles:
            raise ValueError(f"unknown prompt style {name!r}; known: {sorted(self.styles)}")
        return self.styles[name]


def _parse_style(name: str, raw: object) -> PromptStyle:
    """A PromptStyle from one YAML entry (ValueError on a bad layout)."""
    if not isinstance(raw, dict):
        raise ValueError(f"style {name!r} must be a mapping")
    templates = {label: {k: tuple(v) for k, v in pair.items()}
                 for label, pair in (raw.get("templates") or {}).items()}
    return PromptStyle(positive=tuple(raw.get("positive") or ()), negative=tuple(raw.get("negative") or ()),
                       case=raw.get("case", "as_is"), phrases=dict(raw.get("phrases") or {}),
                       templates=templates)


def load_prompts(path: str | Path | None = None) -> PromptSet:
    """Prompt styles from a YAML file, or the packaged ``prompts.yaml`` when ``path`` is None."""
    if path is None:
        source = resources.files("ctvlp.data.resources").joinpath("prompts.yaml")
    else:
        source = Path(path)
        if not source.is_file():
            raise CtvlpError(path, "no such prompt file")
    try:
        data = yaml.safe_load(source.read_text())
        styles = data.get("styles") if isinstance(data, dict) else None
        if not isinstance(styles, dict) or not styles:
            raise ValueError("needs a `styles:` mapping of style name -> templates")
        return PromptSet({str(k): _parse_style(str(k), v) for k, v in styles.items()})
    except (yaml.YAMLError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise CtvlpError(str(source), "bad prompt file: " + " ".join(str(err).split())) from None


@dataclass(frozen=True)
class PromptIndex:
    """Where each text of :func:`build_prompts` comes from; all arrays have one entry per text."""

    labels: tuple[str, ...]
    """The labels, in the order of the pooled embeddings' rows."""
    label: np.ndarray
    """(T,) int: index into ``labels``."""
    positive: np.ndarray
    """(T,) bool: True for a positive sentence, False for a negative one."""
    template: tuple[str, ...]
    """(T,) the template each text was made from."""

    def pool(self, text_emb: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(pos (L, D), neg (L, D)): per label and polarity, the mean of the L2-normalised text
        embeddings, re-normalised. ``text_emb`` is (T, D) in the order of the texts."""
        emb = torch.as_tensor(text_emb)
        if emb.ndim != 2 or emb.shape[0] != len(self.template):
            raise ValueError(f"text_emb must be ({len(self.template)}, D), got {tuple(emb.shape)}")
        emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        slot = torch.as_tensor(self.label * 2 + (~self.positive), dtype=torch.long)  # (T,) row 2l or 2l+1
        sums = emb.new_zeros(2 * len(self.labels), emb.shape[1]).index_add_(0, slot, emb)  # (2L, D)
        pooled = torch.nn.functional.normalize(sums, dim=-1).view(len(self.labels), 2, -1)  # (L, 2, D)
        return pooled[:, 0], pooled[:, 1]


def build_prompts(labels: Sequence[str], style: str | PromptStyle = "ctclip",
                  prompts: PromptSet | None = None) -> tuple[list[str], PromptIndex]:
    """Every prompt text for ``labels`` in ``style`` (a name in ``prompts``, default the packaged
    set, or a PromptStyle), and the index mapping each text back to (label, polarity, template)."""
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be non-empty and distinct, got {list(labels)}")
    if not isinstance(style, PromptStyle):
        style = (prompts or load_prompts()).style(style)
    texts, label_idx, polarity, template = [], [], [], []
    for i, label in enumerate(labels):
        for positive in (True, False):
            for tmpl, text in style.sentences(label, positive):
                texts.append(text)
                label_idx.append(i)
                polarity.append(positive)
                template.append(tmpl)
    index = PromptIndex(labels=tuple(labels), label=np.array(label_idx, dtype=np.int64),
                        positive=np.array(polarity, dtype=bool), template=tuple(template))
    return texts, index
