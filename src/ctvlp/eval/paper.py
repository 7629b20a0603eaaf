"""Each recipe's paper table: the rows its paper reports, read from a ``ctvlp eval`` metrics.json.

:data:`PAPER_TABLES` lists, per recipe, the numbers its paper (``../shared/seeds``, METHODS.md) reports,
each as a :class:`Row`: the paper's name for it, where ctvlp's metrics hold our number (a dotted key of
metrics.json, or a function of it), the paper's own value when the seed or METHODS.md states one, and
a note naming any difference in how ours is computed. Rows ctvlp cannot compute (fine-tuning,
external datasets, a scorer model that is not available offline) are listed with ``not_computed`` and
the reason, never left out and never filled with a stand-in number.

:func:`paper_tasks` is the evaluation task set a recipe needs for its rows (the recipe files set
``EvalConfig.tasks`` to it; tests/test_paper_eval_tasks.py checks both); :func:`paper_rows` fills a table
from the metrics of one run (``ctvlp eval`` writes it as ``paper_rows`` and prints it).

Our numbers are fractions in [0, 1] (AUROC, F1, recall, Dice) at volume level on the test split,
thresholds chosen on the validation split; the papers print percentages and tune on their own
protocol, so the ``paper`` column is a place to stand beside, not a target we claim to reproduce.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ctvlp.eval.names import CORE_TASKS

BERT_F1_ROW = "report generation BERT-F1 (BERTScore, MiniLM layer 6, not the paper's model)"
"""The row's name says the deviation where the number is printed."""
BERT_F1 = ("BERTScore F1 with the packaged MiniLM (all-MiniLM-L6-v2, layer 6), not the paper's scorer model "
           "(unstated; bert-score's English default is roberta-large): not comparable in absolute value")


@dataclass(frozen=True)
class Row:
    """One number of a paper's table."""

    name: str
    """The paper's name for the number."""
    key: str | None
    """Dotted key of metrics.json holding ours (its first part is the task), None when not computed."""
    paper: str | None = None
    """The paper's reported value, as it prints it (None: the seed states none)."""
    note: str = ""
    """How ours differs; for a row with ``key`` None, why ctvlp does not compute it."""
    value: Callable[[dict], float | None] | None = None
    """Computes ours from the metrics when a key alone does not (the task is still ``key``'s first part)."""
    expand: Callable[[dict], list[tuple[str, float | None]]] | None = None
    """A row per cell of the run (e.g. per slice count of the robustness grid): metrics -> [(name, value)]."""

    @property
    def task(self) -> str | None:
        return None if self.key is None else self.key.split(".")[0]


def _get(metrics: dict, key: str):
    obj = metrics
    for part in key.split("."):
        obj = obj[part]
    return obj


def _min_label_auroc(metrics: dict) -> float | None:
    per_label = metrics["zeroshot"]["volume"]["per_label"]
    values = [per_label[name]["auroc"] for name in metrics["zeroshot"]["volume"]["labels_in_mean"]]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def _zs(metric: str, name: str, paper: str | None = None, note: str = "") -> Row:
    return Row(name, f"zeroshot.volume.mean_{metric}", paper, note)


def _recall(direction: str, k: int, name: str, paper: str | None = None) -> Row:
    return Row(name, f"retrieval.volume.{direction}.recall@{k}", paper)


def _retrieval_both(ks=(1, 5, 10)) -> tuple[Row, ...]:
    return (*(_recall("volume_to_report", k, f"CT->report R@{k}") for k in ks),
            *(_recall("report_to_volume", k, f"report->CT R@{k}") for k in ks))


def _stability_cells(metrics: dict) -> list[tuple[str, float | None]]:
    """One row per slice count of the run's robustness grid, repeat padding (the paper's): its mean AUROC."""
    return [(f"zero-shot AUROC, {r['n']} slices (repeat padding)", r["mean_auroc"])
            for r in metrics["robustness"]["summary"] if r["padding"] == "repeat"]


_STABILITY = Row("zero-shot AUROC per slice count (repeat padding)", "robustness.summary", expand=_stability_cells,
                 note="the n centred slices, repeat-padded to the training chunk depth (ctvlp.eval.robustness; "
                      "eval.robustness_counts)")


_ZS_NOTE = "volume level, 18 CT-RATE labels, thresholds maximising F1 on the validation split (papers: own protocol)"
_FINETUNE = "ctvlp has no fine-tuning evaluation (only frozen-encoder probes)"

PAPER_TABLES: dict[str, tuple[str, tuple[Row, ...]]] = {
    "ctclip": ("CT-CLIP (Hamamci et al. 2024): zero-shot classification (METHODS.md's table) and retrieval", (
        _zs("auroc", "zero-shot AUROC", "73.3", _ZS_NOTE),
        _zs("f1", "zero-shot F1", "70.8", _ZS_NOTE),
        _zs("accuracy", "zero-shot accuracy", "66.9", _ZS_NOTE),
        _zs("precision", "zero-shot precision", "32.6", _ZS_NOTE),
        *(_recall("report_to_volume", k, f"report->CT R@{k}") for k in (5, 10, 50)),
    )),
    "sigvlp": ("SigVLP (arXiv 2602.21735): zero-shot abnormality and organ classification, retrieval, "
               "segmentation probing, stability across slice counts", (
        _zs("auroc", "zero-shot abnormality AUROC", note=_ZS_NOTE),
        _zs("f1", "zero-shot abnormality F1", note=_ZS_NOTE),
        Row("zero-shot organ AUROC", "organs.mean_auroc", note="which organ a chunk contains (ctvlp.eval.organs)"),
        Row("zero-shot organ F1", "organs.mean_f1"),
        *_retrieval_both(),
        Row("segmentation probe mean Dice", "seg_probe.mean_dice",
            note="a light voxel head on the frozen tokens (ctvlp.eval.seg_probe); the cache's structures"),
        _STABILITY,
    )),
    "scalevlp": ("SCALE-VLP (arXiv 2511.02996): CT-report retrieval, abnormality classification, report "
                 "generation from a decoder on the frozen encoder", (
        *_retrieval_both(),
        _zs("auroc", "abnormality classification AUROC (zero-shot)", note=_ZS_NOTE),
        Row("abnormality classification AUROC (linear probe)", "probe.mean_auroc",
            note="the paper does not say zero-shot or supervised: both are listed"),
        Row("report generation ROUGE-L", "generation_probe.rouge_l", "0.44",
            "decoder trained on the frozen encoder (ctvlp.eval.generation_probe; the paper's decoder is not "
            "described); rouge-score ROUGE-L F-measure, mean over reports"),
        Row(BERT_F1_ROW, "generation_probe.bertscore_f1", "0.89", BERT_F1),
        Row("zero-shot transfer to BIMCV-R", None, note="BIMCV-R is not a dataset ctvlp prepares"),
    )),
    "segvl": ("SegVL (seed segvl.txt): zero-shot classification (its Table 6), linear probing, zero-shot "
              "segmentation, segmentation by linear probing (its Table 2)", (
        _zs("precision", "zero-shot precision", "38.2", _ZS_NOTE),
        _zs("auroc", "zero-shot AUC", "76.7", _ZS_NOTE),
        _zs("f1", "zero-shot F1", "74.0", _ZS_NOTE),
        Row("linear probing AUC", "probe.mean_auroc",
            note="logistic regression on the frozen pooled embedding (ctvlp.eval.probe)"),
        Row("zero-shot segmentation mean Dice", "segmentation.mean_dice",
            note="voxel-wise P = (cos + 1) / 2 against the mask-name anchors, > 0.5 (the paper shows it only as "
                 "figures)"),
        Row("segmentation linear probing mean Dice", "seg_probe.mean_dice",
            note="a light voxel head on the frozen tokens, the cache's structures (paper: TotalSegmentator, "
                 "MSD-Lung, BTCV)"),
        Row("classification / segmentation finetuning", None, note=_FINETUNE),
    )),
    "uniferum": ("Uniferum (arXiv 2509.01554): classification AUROC through its label head, segmentation", (
        _zs("auroc", "CT-RATE AUROC (label head)", note="sigmoid(t cos(v, u_k) + b) of the label prompts; "
                                                         + _ZS_NOTE),
        _zs("f1", "CT-RATE F1 (label head)", note=_ZS_NOTE),
        Row("segmentation mean Dice (masks as prompts)", "segmentation.mean_dice",
            note="zero-shot through the shared voxel head"),
        Row("zero-shot AUROC on RAD-ChestCT / INSPECT", None,
            note="needs those datasets prepared as a separate cache: run ctvlp eval --data on it"),
    )),
    "colipri": ("COLIPRI (arXiv 2510.15042): zero-shot classification, report-to-image retrieval, "
                "segmentation, report generation", (
        _zs("auroc", "zero-shot AUROC", "79.8-81.0", _ZS_NOTE + "; prompts: COLIPRI's short pairs"),
        _recall("report_to_volume", 5, "report->image R@5", "35.1"),
        _recall("report_to_volume", 1, "report->image R@1"),
        Row("segmentation DSC (frozen encoder)", "seg_probe.mean_dice", "79.97-86.03",
            "a light voxel head on the frozen tokens, not the paper's nnU-Net decoder; the cache's structures"),
        Row("report generation label macro-F1", "generation.label_f1",
            note="ctvlp's rule-based CT-RATE label extractor on generated vs reference reports, not RadBERT"),
        Row("report generation RadBERT macro-F1", None, "44.9",
            "the RadBERT report classifier is not available offline"),
        Row(BERT_F1_ROW, "generation.bertscore_f1", note=BERT_F1),
    )),
    "demo": ("ctvlp demo (no paper): the targets `ctvlp demo` checks", (
        _zs("auroc", "zero-shot mean AUROC", ">= 0.80 (target)", _ZS_NOTE),
        Row("zero-shot lowest label AUROC", "zeroshot.volume.per_label", ">= 0.65 (target)", value=_min_label_auroc),
        _recall("volume_to_report", 5, "CT->report R@5"),
        _recall("report_to_volume", 5, "report->CT R@5"),
    )),
}
"""recipe -> (the paper and what its evaluation reports, its rows)."""


def paper_tasks(recipe: str) -> tuple[str, ...]:
    """The extra tasks (not :data:`CORE_TASKS`) the recipe's rows read, in row order; () for an unknown recipe."""
    rows = PAPER_TABLES.get(recipe, ("", ()))[1]
    return tuple(dict.fromkeys(r.task for r in rows if r.task is not None and r.task not in CORE_TASKS))


def paper_rows(recipe: str, metrics: dict) -> dict:
    """{``recipe``, ``source`` (the paper), ``rows``: [{``row``, ``value`` (None when not computed), ``key``,
    ``paper``, ``note`` [, ``not_computed``: why]}]} for ``recipe``'s :data:`PAPER_TABLES` entry, read from
    one ``ctvlp eval`` run's ``metrics``; an unknown (custom) recipe gives no rows and says so."""
    if recipe not in PAPER_TABLES:
        return {"recipe": recipe, "source": f"no paper table for recipe {recipe!r}", "rows": []}
    source, rows = PAPER_TABLES[recipe]
    out = []
    for row in rows:
        entry = {"row": row.name, "value": None, "key": row.key, "paper": row.paper, "note": row.note}
        if row.key is None:
            entry["not_computed"] = row.note
        elif row.task not in metrics:
            entry["not_computed"] = f"task {row.task!r} was not run (ctvlp eval --tasks without it)"
        elif row.expand is not None:
            out += [{**entry, "row": name, "value": value} for name, value in row.expand(metrics)]
            continue
        else:
            try:
                entry["value"] = row.value(metrics) if row.value is not None else _get(metrics, row.key)
            except (KeyError, TypeError) as err:
                entry["not_computed"] = f"{row.key} is missing from this run's metrics ({err})"
        out.append(entry)
    return {"recipe": recipe, "source": source, "rows": out}


def format_rows(table: dict) -> list[str]:
    """The table as aligned text lines: name, ours (3 decimals, or ``n/a``), the paper's value."""
    rows = table["rows"]
    if not rows:
        return [f"  {table['source']}"]
    width = max(len(r["row"]) for r in rows)
    lines = [f"  {table['source']}", f"  {'row':<{width}}  {'ours':>7}  paper"]
    for r in rows:
        ours = "n/a" if r["value"] is None else f"{r['value']:.3f}"
        tail = r["paper"] or "-"
        if "not_computed" in r:
            tail += f"  (not computed: {r['not_computed']})"
        lines.append(f"  {r['row']:<{width}}  {ours:>7}  {tail}")
    return lines
