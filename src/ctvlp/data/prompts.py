"""Zero-shot prompt styles: label names -> positive and negative sentences, and back.

The styles live in ``ctvlp/data/resources/prompts.yaml`` (its header explains the fields); a user
file with the same layout replaces it. :func:`build_prompts` returns the flat list of texts to
encode once and a :class:`PromptIndex` that maps every text back to (label, polarity, template) and
pools the text embeddings into one positive and one negative embedding per label.

The style :data:`~ctvlp.data.prompt_names.CORPUS` is not written by hand: :func:`corpus_style` mines it from
the training reports (:func:`split_reports`: the sentences that state one label, present or absent, as the
reports phrase them). A model trained with it carries the mined style in its checkpoint and export
(:func:`prompt_set` merges it in). All of this is text work, shared by training (which mines the style once),
evaluation and inference; encoding the texts with a model is :mod:`ctvlp.models.prompting`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from ctvlp.data.cache import Cache
from ctvlp.data.prompt_names import CORPUS, packaged_prompts
from ctvlp.data.reports import sentence_findings, split_sentences
from ctvlp.errors import CtvlpError

_CASES = ("as_is", "lower")


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

    def to_dict(self) -> dict:
        """The style in the YAML file's layout (:func:`load_prompts` and :func:`prompt_set` read it back)."""
        return {"case": self.case, "positive": list(self.positive), "negative": list(self.negative),
                "phrases": dict(self.phrases),
                "templates": {label: {k: list(v) for k, v in pair.items()} for label, pair in self.templates.items()}}


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


def _literal(sentence: str) -> str:
    """A sentence as a template that formats to itself."""
    return sentence.replace("{", "{{").replace("}", "}}")


def split_reports(cache: Cache, split: str) -> list[str]:
    """The findings text of every volume of ``split`` (what the ``corpus`` prompt style is mined from)."""
    index = cache.index
    if "findings" not in index.columns:
        return []
    return [str(t) for t in index.loc[index["split"] == split, "findings"].fillna("")]


def corpus_style(reports: Iterable[str], labels: Sequence[str], fallback: PromptStyle,
                 per_side: int = 32) -> PromptStyle:
    """The reports' own phrasing of each label as a prompt style.

    Every sentence of ``reports`` that states exactly one label (``ctvlp.data.reports.sentence_findings``:
    "Atherosclerotic calcifications in the coronary arteries." states coronary artery wall calcification,
    present) is a template of that label and polarity; each side keeps its ``per_side`` most frequent
    sentences (ties in text order), and a side no sentence states ("medical material" is never written
    absent) takes ``fallback``'s sentences for the label; a label outside ``labels`` gets ``fallback``'s
    templates. No image and no label column is read: the prompts are text mined from the training
    split, as a radiologist's prompt would be written in the reports' language."""
    if per_side < 1:
        raise ValueError(f"per_side must be >= 1, got {per_side}")
    counts = Counter(s for report in reports for s in split_sentences(report))
    mined: dict[tuple[str, bool], list[str]] = {}
    for sentence, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        found = sentence_findings(sentence)
        if len(found) == 1:
            mined.setdefault(found[0], []).append(sentence)
    templates = {}
    for label in labels:
        pair = {}
        for side, positive in (("positive", True), ("negative", False)):
            texts = mined.get((label, positive), [])[:per_side] or [t for _, t in fallback.sentences(label, positive)]
            pair[side] = tuple(_literal(t) for t in texts)
        templates[label] = pair
    return PromptStyle(positive=fallback.positive, negative=fallback.negative, case=fallback.case,
                       phrases=fallback.phrases, templates={**fallback.templates, **templates})


def prompt_set(style: str, labels: Sequence[str], path: str | Path | None = None, stored: dict | None = None,
               reports: Callable[[], Iterable[str]] | None = None) -> PromptSet:
    """The styles ``style`` is looked up in: the file at ``path`` (default the packaged one) and, for
    :data:`CORPUS`, the model's own mined style (``stored``: its ``prompts``, {name: style dict}, which
    checkpoints and exports carry) or, when it carries none, one mined now from ``reports()`` with the
    ``report`` style as fallback (CtvlpError when neither is given)."""
    prompts = load_prompts(path)
    if style != CORPUS or CORPUS in prompts.styles:
        return prompts
    if stored and CORPUS in stored:
        mined = _parse_style(CORPUS, stored[CORPUS])
    elif reports is not None:
        texts = list(reports())
        if not any(t.strip() for t in texts):
            raise CtvlpError(None, f"prompt style {CORPUS!r}: no report text to mine the prompts from")
        mined = corpus_style(texts, labels, prompts.style("report"))
    else:
        raise CtvlpError(None, f"prompt style {CORPUS!r} is mined from training reports, and this model carries "
                               "none: evaluate it on a prepared cache (ctvlp eval) or choose another style")
    return PromptSet({**prompts.styles, CORPUS: mined})


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
        source = packaged_prompts()
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
