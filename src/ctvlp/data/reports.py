"""Rule-based radiology report parsing: sections, sentences, organs, negation, labels, opposites.

Everything the rules know lives in one data file, ``resources/lexicon.yaml``; this module only
compiles and applies it. Deterministic and fast (precompiled regexes): used on every report of a
dataset by the adapters, by COLIPRI's opposite-sentence loss and to score generated reports.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.errors import BadReportError

SECTION_HEADERS: dict[str, str] = {
    "clinical": r"clinical\s+(?:information|history|indication|details)|history|indications?|reason\s+for\s+exam",
    "technique": r"technique|protocol|procedure|comparison",
    "findings": r"findings?|report|description",
    "impressions": r"impressions?|conclusions?|summary|opinion|assessment",
}
ABBREVIATIONS = ("approx", "e.g", "i.e", "dr", "vs", "etc", "cf", "fig", "no", "nr", "max", "min", "ca", "st", "mr", "ms")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass
class Sentence:
    """One sentence of a report, the organs it speaks about, and whether it states an absence."""

    text: str
    organs: list[str]
    negated: bool


@dataclass(frozen=True)
class _Lexicon:
    organs: tuple[str, ...]
    aliases: dict[str, re.Pattern]
    keywords: re.Pattern  # one alternation; group names are organ ids (keyword index appended)
    parents: dict[str, list[str]]
    negation: re.Pattern
    normal: re.Pattern
    pseudo: re.Pattern
    clause_break: re.Pattern
    findings: dict[str, tuple[re.Pattern, re.Pattern | None, re.Pattern | None]]


def _alternation(patterns: Sequence[str]) -> str:
    return "|".join(f"(?:{p})" for p in sorted(patterns, key=len, reverse=True))


def _words(patterns: Sequence[str]) -> re.Pattern:
    return re.compile(rf"\b(?:{_alternation(patterns)})\b", re.IGNORECASE)


@cache
def lexicon() -> _Lexicon:
    """The compiled lexicon (loaded once)."""
    raw = yaml.safe_load(resources.files("ctvlp.data.resources").joinpath("lexicon.yaml").read_text())
    organs = raw["organs"]
    groups = [f"(?P<{oid}__{i}>\\b(?:{kw})\\b)" for oid, spec in organs.items()
              for i, kw in enumerate(sorted(spec["keywords"], key=len, reverse=True))]
    neg = raw["negation"]
    findings = {name: (_words(spec["patterns"]),
                       re.compile(spec["requires"], re.IGNORECASE) if spec.get("requires") else None,
                       re.compile(spec["ignore"], re.IGNORECASE) if spec.get("ignore") else None)
                for name, spec in raw["findings"].items()}
    return _Lexicon(
        organs=tuple(organs),
        aliases={oid: re.compile(rf"(?:{_alternation(spec['aliases'])})", re.IGNORECASE)
                 for oid, spec in organs.items()},
        keywords=re.compile("|".join(groups), re.IGNORECASE),
        parents={oid: list(spec.get("parents", [])) for oid, spec in organs.items()},
        negation=_words(neg["cues"]), normal=_words(neg["normal"]), pseudo=_words(neg["pseudo"]),
        clause_break=re.compile("|".join(neg["clause_breaks"]), re.IGNORECASE), findings=findings)


def _text(text: object, what: str = "report") -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadReportError(None, f"{what} is bytes that are not UTF-8 text") from None
    raise BadReportError(None, f"{what} is not text (got {type(text).__name__})")


ORGANS: tuple[str, ...] = lexicon().organs


def canonical_organ(name: str) -> str | None:
    """Organ id of an organ or region name ("trachea and bronchie", "Left lung", "others") or of an id
    itself (``trachea_bronchi``, as mask names are written), else None."""
    if str(name) in lexicon().aliases:
        return str(name)
    norm = " ".join(_WORD.findall(str(name).lower().replace("_", " ")))
    for oid, pattern in lexicon().aliases.items():
        if pattern.fullmatch(norm):
            return oid
    return None


_HEADER = re.compile(
    r"(?im)(?:^|(?<=[.\n]))[ \t]*(?:" + "|".join(f"(?P<{k}>{v})" for k, v in SECTION_HEADERS.items())
    + r")[ \t]*(?::|\n|$)")


def split_sections(text: str) -> dict[str, str]:
    """Section name -> text for the sections present; text before any header counts as findings."""
    text = _text(text)
    sections: dict[str, list[str]] = {}
    matches = [m for m in _HEADER.finditer(text) if m.group(0).strip().endswith(":") or _own_line(text, m)]
    starts = [0] + [m.end() for m in matches]
    names = ["findings"] + [m.lastgroup for m in matches]
    ends = [m.start() for m in matches] + [len(text)]
    for name, start, end in zip(names, starts, ends):
        body = text[start:end].strip()
        if body:
            sections.setdefault(name, []).append(body)
    return {k: " ".join(v) for k, v in sections.items()}


def _own_line(text: str, m: re.Match) -> bool:
    """A header without a colon counts only when it is alone on its line in capitals."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    line_end = text.find("\n", m.end() - 1)
    line = text[line_start: len(text) if line_end < 0 else line_end].strip()
    return line.isupper() and line.rstrip(":") == m.group(0).strip().rstrip(":")


_BOUNDARY = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\s*\n\s*(?:[-*\u2022]\s*)?|(?<=;)\s+")
_LIST_MARK = re.compile(r"^\s*(?:[-*\u2022]|\(?\d{1,2}[.)])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of a text: ends at . ! ? or a line break; abbreviations, decimals and list numbers kept."""
    text = _text(text)
    pieces, start = [], 0
    for m in _BOUNDARY.finditer(text):
        before = text[start:m.start()]
        last = before.rsplit(None, 1)[-1].rstrip(".").lower() if before.strip() else ""
        if "\n" not in m.group(0) and (last in ABBREVIATIONS or last.isdigit() and len(before.split()) <= 1):
            continue  # "approx. 5 mm", "1. Finding"
        pieces.append(before)
        start = m.end()
    pieces.append(text[start:])
    out = [_LIST_MARK.sub("", p).strip() for p in pieces]
    return [p for p in out if p and any(c.isalnum() for c in p)]


def assign_organs(sentence: str) -> list[str]:
    """Organ ids the sentence speaks about, in lexicon order (with their parent regions)."""
    lex = lexicon()
    found: set[str] = set()
    for m in lex.keywords.finditer(_text(sentence, "sentence")):
        found.add(m.lastgroup.rsplit("__", 1)[0])
    found |= {p for oid in list(found) for p in lex.parents[oid]}
    return [o for o in lex.organs if o in found]


def _clauses(sentence: str) -> list[str]:
    return [c for c in lexicon().clause_break.split(sentence) if c.strip()]


def _clause_negated(clause: str) -> bool:
    lex = lexicon()
    clause = lex.pseudo.sub(" ", clause)
    return bool(lex.negation.search(clause) or lex.normal.search(clause))


def is_negated(sentence: str) -> bool:
    """True when the sentence states an absence or a normal finding ("No effusion.", "Heart is normal.").

    With finding mentions, every clause that mentions one must be negated; without, any negated clause.
    """
    clauses = _clauses(_text(sentence, "sentence"))
    with_findings = [c for c in clauses if _mentions(c)]
    if with_findings:
        return all(_clause_negated(c) for c in with_findings)
    return any(_clause_negated(c) for c in clauses)


def _mentions(clause: str) -> list[str]:
    """CT-RATE labels mentioned in a clause (negated or not)."""
    out = []
    for name, (pattern, requires, ignore) in lexicon().findings.items():
        if not pattern.search(clause):
            continue
        context = ignore.sub(" ", clause) if ignore else clause
        if requires is None or requires.search(context):
            out.append(name)
    return out


def extract_labels(text: str, labels: Sequence[str] = CTRATE_LABELS) -> dict[str, int]:
    """label -> 1 if a non-negated clause of the text mentions it, else 0."""
    present: set[str] = set()
    for sentence in split_sentences(_text(text)):
        for clause in _clauses(sentence):
            if not _clause_negated(clause):
                present.update(_mentions(clause))
    return {name: int(name in present) for name in labels}


def sentence_findings(sentence: str) -> tuple[tuple[str, bool], ...]:
    """The CT-RATE labels a sentence states, each with whether it states it present, sorted:
    "Nodule of 7 mm in the left lower lobe." -> (("Lung nodule", True),); "No pleural effusion." ->
    (("Pleural effusion", False),); a sentence without a finding -> ()."""
    found = {(name, not _clause_negated(clause)) for clause in _clauses(_text(sentence, "sentence"))
             for name in _mentions(clause)}
    return tuple(sorted(found))


def parse_report(text: str) -> list[Sentence]:
    """Sentences of every section with their organs and negation."""
    sentences = []
    for body in split_sections(text).values():
        sentences += [Sentence(s, assign_organs(s), is_negated(s)) for s in split_sentences(body)]
    return sentences


def structure_report(text: str) -> str:
    """A report rewritten into anatomical sections with positive and negative findings, by rules
    (COLIPRI restructured CT-RATE's reports with GPT-4o): one line per organ in order of first mention,
    ``"<Organ>: positive: <sentences> negative: <sentences>"`` (empty parts left out); sentences that name
    no organ go to a last ``"Other:"`` line. A sentence about several organs appears under each."""
    sections: dict[str, dict[bool, list[str]]] = {}
    for sentence in parse_report(_text(text)):
        for organ in sentence.organs or ["other"]:
            sections.setdefault(organ, {False: [], True: []})[sentence.negated].append(sentence.text)
    order = [o for o in sections if o != "other"] + (["other"] if "other" in sections else [])
    lines = []
    for organ in order:
        parts = [f"{kind}: {' '.join(sections[organ][negated])}"
                 for kind, negated in (("positive", False), ("negative", True)) if sections[organ][negated]]
        lines.append(f"{organ.replace('_', ' ').capitalize()}: {' '.join(parts)}")
    return "\n".join(lines)


def organ_sentences(text: str) -> dict[str, list[str]]:
    """Organ id -> the sentences of ``text`` assigned to it (a sentence may serve several organs)."""
    out: dict[str, list[str]] = {}
    for sentence in split_sentences(_text(text)):
        for organ in assign_organs(sentence):
            out.setdefault(organ, []).append(sentence)
    return out


_POSITIVE_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"^there (is|was) no (?:evidence of )?([aeiou].+)$", r"There \1 an \2"),
    (r"^there (is|was) no (?:evidence of )?(.+)$", r"There \1 a \2"),
    (r"^there (are|were) no (?:evidence of )?(.+)$", r"There \1 \2"),
    (r"^no (?:evidence of |signs? of )?(.+?)(?: (?:is|are|was|were) (?:seen|noted|observed|detected|identified|present))?$",
     r"\1 is present"),
    (r"^(.+?) (is|are|was|were) not (seen|noted|observed|detected|identified|present|visualized)(.*)$", r"\1 \2 \3\4"),
    (r"^(.+?) (is|are|was|were) (?:absent|normal|unremarkable|within normal limits)(.*)$", r"\1 \2 abnormal\3"),
    (r"^(.+?)\bwithout\b(.+)$", r"\1with\2"),
))
_NEGATIVE_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"^(.+?) (is|are|was|were) abnormal(.*)$", r"\1 \2 normal\3"),
    (r"^there (is|are|was|were) (?:(?:an?|some|several|multiple|\d+(?:\.\d+)?\s*(?:mm|cm)|small|large|mild|moderate)\s+)*(.+)$",
     r"There \1 no \2"),
    (r"^(.+?) (is|are|was|were) present(.*)$", r"No \1\3"),
    (r"^(.+?) (is|are|was|were) (seen|noted|observed|detected|identified|visualized)(.*)$", r"\1 \2 not \3\4"),
    (r"^(.+?) (is|are|was|were) (.+)$", r"\1 \2 not \3"),
))


def opposite_sentence(sentence: str) -> str:
    """The sentence stating the opposite: "Pleural effusion is present." <-> "No pleural effusion."."""
    text = " ".join(_text(sentence, "sentence").split()).rstrip(" .")
    if not text:
        return ""
    rules = _POSITIVE_RULES if is_negated(text) else _NEGATIVE_RULES
    for pattern, replacement in rules:
        if pattern.match(text):
            out = pattern.sub(replacement, text, count=1)
            break
    else:
        out = lexicon().negation.sub(" ", text) if rules is _POSITIVE_RULES else f"No {text[0].lower()}{text[1:]}"
    out = " ".join(out.split())
    if not out:
        return ""
    if out[:3].lower() == "no " and out[3:5].istitle():  # "No Pleural effusion" -> "No pleural effusion"
        out = out[:3] + out[3].lower() + out[4:]
    return out[0].upper() + out[1:] + "."
