"""Report generation (COLIPRI): decode a report for every test volume and score it against the text the
model trained on.

Decoding. Each volume is drawn by the training sampler (centre crop, no randomness; ``whole`` mode
reads the centred ``max_slices``, ``chunk`` mode the seeded chunk the evaluation split always gets);
the vision tower's tokens are the decoder's memory and ``token_mask`` its key padding mask
(:meth:`ctvlp.models.decoder.ReportDecoder.generate`: greedy with ``beams=1``, beam search otherwise,
KV cache on). The new token ids are detokenised by the text tower's tokenizer with its special tokens
([CLS], [SEP], [PAD]) skipped.

Reference: the text the model trained on, as :func:`ctvlp.eval.run.encode_split` builds it:
``structured_report(findings, impressions)`` when ``sampler_cfg.text == "structured"``, else
findings + impressions.

Metrics:

* BLEU-1..4 (:func:`nltk.translate.bleu_score.corpus_bleu`, uniform weights over orders 1..n, one
  reference per report): corpus-level, i.e. n-gram matches and lengths summed over all reports before
  the precisions and the brevity penalty are taken (as the COCO caption scorer report-generation papers
  use). **Tokenisation** (:func:`words`): lower-case word tokens -- runs of letters, or numbers with an
  optional decimal part; punctuation is dropped. **No smoothing** (nltk's ``method0``): when some order
  has no match in the whole corpus the score is 0 (nltk would return a tiny stand-in such as 1e-78 and
  warn; we count the clipped matches of each order with nltk's ``modified_precision`` and return 0.0).
* ROUGE-L: the F-measure of :class:`rouge_score.rouge_scorer.RougeScorer` (``["rougeL"]``, no stemmer;
  its own tokeniser: lower case, non-alphanumerics as spaces) per report, mean over reports.
* BERTScore (:class:`bert_score.BERTScorer`, Zhang et al. 2020): greedy cosine matching of contextual
  token embeddings, precision / recall / F1 per report, mean over reports; no IDF weighting, no baseline
  rescaling. Model: the packaged sentence-transformers all-MiniLM-L6-v2 (``ctvlp.models.text.minilm_dir``,
  offline), embeddings of its last (6th) layer. Numbers are comparable only with the same model and layer
  (the output names both).
* METEOR (:func:`nltk.translate.meteor_score.meteor_score`, :func:`words` tokens, mean over reports): it
  needs nltk's WordNet corpus for its synonym stage; without it ``meteor`` is None and ``meteor_unavailable``
  says why (never a silent 0).
* Clinical efficacy: the CT-RATE labels :func:`ctvlp.data.reports.extract_labels` finds in the generated
  and in the reference text; scikit-learn's ``f1_score`` with reference labels as truth, ``zero_division=0``:
  ``label_f1_micro`` over all labels and reports; ``label_f1`` (macro) the mean over the labels positive
  in at least one reference (a label no reference states has no defined recall; None when there is none).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import time
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, modified_precision
from rouge_score.rouge_scorer import RougeScorer
from sklearn.metrics import f1_score

from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.loader import Collate, split_dataset
from ctvlp.data.reports import extract_labels
from ctvlp.data.sampling import SamplerConfig, report_text
from ctvlp.fsutil import jsonable
from ctvlp.models.decoder import special_token_ids

_WORDS = re.compile(r"[a-z]+|\d+(?:\.\d+)?")


def words(text: str) -> list[str]:
    """BLEU's tokens: lower-case runs of letters and numbers (with a decimal part); punctuation dropped."""
    return _WORDS.findall(text.lower())


def bleu_scores(generated: Sequence[str], references: Sequence[str], max_order: int = 4) -> dict[str, float]:
    """{``bleu1`` .. ``bleu<max_order>``}: corpus BLEU-n of the texts (:func:`words` tokens, one reference
    each, no smoothing; exactly 0.0 when an order up to n has no match in the corpus)."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts but {len(references)} references")
    hyps = [words(t) for t in generated]
    refs = [[words(t)] for t in references]
    matched = [sum(modified_precision(r, h, k).numerator for r, h in zip(refs, hyps) if h)
               for k in range(1, max_order + 1)]  # clipped n-gram matches of each order, whole corpus
    out = {}
    for n in range(1, max_order + 1):
        if not all(matched[:n]):  # method0 would return a tiny stand-in for exp(log 0) (and warn)
            out[f"bleu{n}"] = 0.0
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            score = corpus_bleu(refs, hyps, weights=(1.0 / n,) * n, smoothing_function=SmoothingFunction().method0)
        out[f"bleu{n}"] = float(score)
    return out


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over the pairs (rouge-score's tokeniser, no stemmer)."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts but {len(references)} references")
    if not generated:
        raise ValueError("no texts to score")
    scorer = RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score(ref, gen)["rougeL"].fmeasure for gen, ref in zip(generated, references)]))


def label_f1(generated: Sequence[str], references: Sequence[str],
             labels: Sequence[str] = CTRATE_LABELS) -> dict:
    """Clinical efficacy: ``extract_labels`` of both texts -> {``label_f1_micro``, ``label_f1`` (macro over
    the labels positive in some reference; None when none is), ``labels_in_macro``, ``per_label``
    {label: F1 or None (no reference states it)}}."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts but {len(references)} references")
    labels = list(labels)
    pred = np.array([[extract_labels(t, labels)[name] for name in labels] for t in generated], int).reshape(-1, len(labels))
    true = np.array([[extract_labels(t, labels)[name] for name in labels] for t in references], int).reshape(-1, len(labels))
    present = [j for j in range(len(labels)) if true[:, j].any()]
    per_label = f1_score(true, pred, average=None, zero_division=0) if len(true) else np.zeros(len(labels))
    return {"label_f1_micro": float(f1_score(true, pred, average="micro", zero_division=0)) if len(true) else 0.0,
            "label_f1": float(np.mean(per_label[present])) if present else None,
            "labels_in_macro": [labels[j] for j in present],
            "per_label": {name: (float(per_label[j]) if j in present else None) for j, name in enumerate(labels)}}


BERTSCORE_LAYER = 6
"""MiniLM-L6's last layer: BERTScore's token embeddings."""


@functools.lru_cache(maxsize=1)
def _bert_scorer():
    from bert_score import BERTScorer

    # deferred on purpose: models.text loads transformers, needed only when BERTScore is computed
    from ctvlp.models.text import minilm_dir

    return BERTScorer(model_type=str(minilm_dir()), num_layers=BERTSCORE_LAYER, lang="en")


def bertscore(generated: Sequence[str], references: Sequence[str]) -> dict:
    """{``bertscore_precision``, ``bertscore_recall``, ``bertscore_f1``} (means over the pairs), plus
    ``bertscore_model`` and ``bertscore_layer`` (the packaged MiniLM, layer 6; module docstring)."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts but {len(references)} references")
    if not generated:
        raise ValueError("no texts to score")
    p, r, f = _bert_scorer().score(list(generated), list(references))  # (N,) each
    return {"bertscore_precision": float(p.mean()), "bertscore_recall": float(r.mean()),
            "bertscore_f1": float(f.mean()), "bertscore_model": "sentence-transformers/all-MiniLM-L6-v2 (packaged)",
            "bertscore_layer": BERTSCORE_LAYER}


def wordnet_missing() -> str | None:
    """Why METEOR cannot run (nltk's WordNet corpus not installed), or None when it can."""
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except LookupError:
        return ("nltk's WordNet corpus is not installed (METEOR's synonym stage needs it: "
                "python -m nltk.downloader wordnet)")
    return None


def meteor(generated: Sequence[str], references: Sequence[str]) -> dict:
    """{``meteor``: mean nltk METEOR over the pairs (:func:`words` tokens)}, or ``meteor`` None and
    ``meteor_unavailable`` (the reason) when :func:`wordnet_missing`."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts but {len(references)} references")
    from nltk.translate.meteor_score import meteor_score

    reason = wordnet_missing()
    if reason is not None:
        return {"meteor": None, "meteor_unavailable": reason}
    return {"meteor": float(np.mean([meteor_score([words(r)], words(g)) for g, r in zip(generated, references)]))}


def generation_metrics(generated: Sequence[str], references: Sequence[str]) -> dict:
    """BLEU-1..4, ROUGE-L, BERTScore, METEOR (or why not) and label F1 (micro and macro) of generated
    texts against their references."""
    return {**bleu_scores(generated, references), "rouge_l": rouge_l(generated, references),
            **bertscore(generated, references), **meteor(generated, references), **label_f1(generated, references)}



@torch.no_grad()
def generate_reports(model, cache, sampler_cfg: SamplerConfig, split: str = "test", device: torch.device | str = "cpu",
                     max_new_tokens: int | None = None, beams: int = 1, max_volumes: int | None = None,
                     batch_size: int = 4, decoder=None) -> tuple[list[str], list[str], list[str]]:
    """(volume ids, generated reports, references) of ``split`` in index order (the first ``max_volumes``);
    ``decoder``: a :class:`~ctvlp.models.decoder.ReportDecoder` reading the model's vision tokens (None: the
    model's own, ``model.decoder``; ``ctvlp.eval.generation_probe`` passes one trained on the frozen tower)."""
    if decoder is None:
        decoder = getattr(model, "decoder", None)
    if decoder is None or (decoder is getattr(model, "decoder", None)
                           and getattr(getattr(model, "cfg", None), "decoder", None) is None):
        raise ValueError("report generation needs a model with a report decoder, and this model has none "
                         "(model.cfg.decoder is None): train a recipe that has one (colipri) or set "
                         "ModelConfig.decoder = DecoderConfig(...) (config key model.decoder)")
    if beams < 1 or batch_size < 1:
        raise ValueError(f"beams and batch_size must be positive, got {beams}, {batch_size}")
    max_new_tokens = decoder.cfg.max_length if max_new_tokens is None else int(max_new_tokens)
    device = torch.device(device)
    sampler = dataclasses.replace(sampler_cfg, random_crop=False, include_masks=False, mask_names=None)
    dataset = split_dataset(cache, sampler, split, seed=0)
    n = len(dataset) if max_volumes is None else min(len(dataset), int(max_volumes))
    if n < 1:
        raise ValueError(f"max_volumes must be positive, got {max_volumes}")
    collate = Collate.for_dataset(dataset)
    tokenizer = model.text.tokenizer
    special = special_token_ids(tokenizer)
    depths = dataset.depths()[:n]
    order = np.argsort(depths, kind="stable")  # similar depths together: little padding
    generated: list[str | None] = [None] * n
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            batch = collate([dataset[int(i)] for i in rows])
            feats = model.image_features(batch["image"].to(device), batch["slice_mask"].to(device))
            seqs = decoder.generate(feats["tokens"], feats["token_mask"], special["bos"], special["eos"],
                                    max_new_tokens, num_beams=beams)
            for i, seq in zip(rows, seqs):
                generated[int(i)] = tokenizer.decode(seq, skip_special_tokens=True).strip()
    finally:
        model.train(was_training)
    index = dataset.index.iloc[:n]
    references = [report_text(f, i, sampler.text) for f, i in zip(index["findings"], index["impressions"])]
    return [str(v) for v in index["id"]], [str(g) for g in generated], references


@torch.no_grad()
def evaluate_generation(model, cache, sampler_cfg: SamplerConfig, split: str = "test",
                        device: torch.device | str = "cpu", max_new_tokens: int | None = None, beams: int = 1,
                        max_volumes: int | None = None, *, batch_size: int = 4, examples: int = 3,
                        decoder=None) -> dict:
    """Generate a report for each volume of ``split`` and score it (see the module docstring).

    ``model``: a :class:`ctvlp.models.vlp.VisionLanguageModel` with a report decoder (``cfg.decoder``);
    ``cache``: a :class:`ctvlp.data.cache.Cache`; ``sampler_cfg``: the training sampler (its ``text``
    picks the reference); ``decoder``: another decoder than the model's own (:func:`generate_reports`).
    ``max_new_tokens``: decoding length limit (None: the decoder's ``max_length``);
    ``beams``: 1 greedy, more beam search; ``max_volumes``: the split's first volumes only.

    Returns a JSON-able dict: ``bleu1`` .. ``bleu4``, ``rouge_l``, ``bertscore_precision``, ``bertscore_recall``,
    ``bertscore_f1``, ``bertscore_model``, ``bertscore_layer``, ``meteor`` (None with ``meteor_unavailable``), ``label_f1_micro``, ``label_f1``
    (macro), ``labels_in_macro``, ``per_label``, ``n``, ``examples`` (the first ``examples`` {``id``,
    ``generated``, ``reference``} in index order), ``beams``, ``max_new_tokens``, ``mean_generated_words``,
    ``mean_reference_words``, ``text``, ``seconds``. The model is put in eval mode and restored.
    """
    start = time.perf_counter()
    ids, generated, references = generate_reports(model, cache, sampler_cfg, split, device, max_new_tokens, beams,
                                                  max_volumes, batch_size, decoder)
    decoder = model.decoder if decoder is None else decoder
    decoded = time.perf_counter()
    metrics = {**generation_metrics(generated, references), "n": len(ids),
               "examples": [{"id": v, "generated": g, "reference": r}
                            for v, g, r in list(zip(ids, generated, references))[:examples]],
               "beams": beams, "max_new_tokens": decoder.cfg.max_length if max_new_tokens is None else max_new_tokens,
               "mean_generated_words": float(np.mean([len(words(t)) for t in generated])),
               "mean_reference_words": float(np.mean([len(words(t)) for t in references])),
               "text": sampler_cfg.text,
               "seconds": {"decode": decoded - start, "total": time.perf_counter() - start}}
    metrics = jsonable(metrics)
    json.dumps(metrics)  # JSON-able by construction; fail here rather than in the caller's writer
    return metrics
