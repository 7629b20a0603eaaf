"""Report-generation evaluation (eval/generation.py): BLEU, ROUGE-L and label F1 against hand-computed
values, a fake decoder that writes the reference (every metric 1), errors, and an end-to-end run of the
debug COLIPRI model on a tiny synthetic cache."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from torch import nn

from ctvlp.data.cache import Cache
from ctvlp.data.sampling import SamplerConfig, report_text, structured_report
from ctvlp.eval.generation import bertscore, bleu_scores, evaluate_generation, label_f1, meteor, rouge_l, words
from ctvlp.models.text import minilm_dir
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- metrics on known strings -------------------------------------------------------------------

def test_words_are_lower_case_letters_and_numbers_without_punctuation():
    assert words("Nodule of 7.5 mm, LEFT lobe; no effusion.") == ["nodule", "of", "7.5", "mm", "left", "lobe",
                                                                  "no", "effusion"]


def test_bleu_golden_single_pair():
    # hypothesis a b c d e vs reference a b c d x: precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty
    out = bleu_scores(["A b, c d e."], ["a b c d x"])
    assert out["bleu1"] == pytest.approx(0.8)
    assert out["bleu2"] == pytest.approx(math.sqrt(0.8 * 0.75))
    assert out["bleu3"] == pytest.approx((0.8 * 0.75 * 2 / 3) ** (1 / 3))
    assert out["bleu4"] == pytest.approx((0.8 * 0.75 * 2 / 3 * 0.5) ** 0.25)


def test_bleu_brevity_penalty_no_smoothing_and_corpus_aggregation():
    short = bleu_scores(["a b c"], ["a b c d e f"])  # every precision 1, BP = exp(1 - 6/3), no 4-gram
    assert short["bleu1"] == short["bleu2"] == short["bleu3"] == pytest.approx(math.exp(-1))
    assert short["bleu4"] == 0.0  # no smoothing: an order without a match zeroes the score
    corpus = bleu_scores(["a b c d", "x y"], ["a b c d", "a b"])  # counts pooled: p1 = 4/6, p2 = 3/4
    assert corpus["bleu1"] == pytest.approx(4 / 6)
    assert corpus["bleu2"] == pytest.approx(math.sqrt(4 / 6 * 3 / 4))
    assert bleu_scores(["same words here ok"], ["Same words here, OK."])["bleu4"] == pytest.approx(1.0)


def test_rouge_l_golden_mean_of_lcs_f_measures():
    # LCS 4 of 5 and 5 words: F = 0.8; "the cat sat" vs "cat the sat": LCS 2 of 3: F = 2/3
    assert rouge_l(["a b c d e"], ["a b c d x"]) == pytest.approx(0.8)
    assert rouge_l(["a b c d e", "the cat sat"], ["a b c d x", "cat the sat"]) == pytest.approx((0.8 + 2 / 3) / 2)
    assert rouge_l([""], ["a b"]) == 0.0


def test_label_f1_golden_micro_and_macro_over_labels_in_references():
    refs = ["Pleural effusion. Cardiomegaly.", "No pleural effusion. Lung nodule in the right lobe."]
    gens = ["Pleural effusion.", "Cardiomegaly."]
    out = label_f1(gens, refs)
    # TP 1 (effusion, report 1), FP 1 (cardiomegaly, report 2), FN 2 (cardiomegaly 1, nodule 2)
    assert out["label_f1_micro"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
    assert sorted(out["labels_in_macro"]) == ["Cardiomegaly", "Lung nodule", "Pleural effusion"]
    assert out["label_f1"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert out["per_label"]["Pleural effusion"] == 1.0 and out["per_label"]["Emphysema"] is None
    assert label_f1(["No finding."], ["Normal chest."])["label_f1"] is None  # no label to average


def test_bertscore_golden_against_a_direct_bert_score_call():
    from bert_score import score

    generated = ["No pleural effusion.", "The heart is enlarged with a small pericardial effusion."]
    references = ["There is no pleural effusion.", "Cardiomegaly. No pericardial effusion."]
    out = bertscore(generated, references)
    p, r, f = score(generated, references, model_type=str(minilm_dir()), num_layers=6, lang="en")
    assert out["bertscore_precision"] == pytest.approx(float(p.mean()), abs=1e-6)
    assert out["bertscore_recall"] == pytest.approx(float(r.mean()), abs=1e-6)
    assert out["bertscore_f1"] == pytest.approx(float(f.mean()), abs=1e-6)
    assert out["bertscore_layer"] == 6 and "MiniLM-L6" in out["bertscore_model"]
    same = bertscore(references, references)
    assert same["bertscore_f1"] == pytest.approx(1.0, abs=1e-5) and out["bertscore_f1"] < same["bertscore_f1"]


def test_meteor_is_null_with_a_reason_without_wordnet_and_computed_with_it(monkeypatch):
    from ctvlp.eval import generation

    monkeypatch.setattr(generation, "wordnet_missing", lambda: "nltk's WordNet corpus is not installed")
    out = meteor(["no effusion"], ["no effusion"])
    assert out["meteor"] is None and "WordNet" in out["meteor_unavailable"]
    monkeypatch.setattr(generation, "wordnet_missing", lambda: None)  # exact matches only: no synonym lookup
    # identical 3-word texts: F_mean = 1, one chunk of 3 matches, penalty 0.5 (1/3)^3 -> 1 - 1/54
    out = meteor(["No pleural effusion.", "No pleural effusion."], ["no pleural effusion", "No pleural effusion"])
    assert out["meteor"] == pytest.approx(1 - 1 / 54, abs=1e-6) and "meteor_unavailable" not in out


def test_reference_is_the_text_the_model_trained_on():
    f, i = "There is a small left pleural effusion. The heart is normal.", "Pleural effusion."
    assert report_text(f, i, "structured") == structured_report(f, i)
    assert report_text(f, i, "report") == f"{f} {i}"
    assert report_text(f, "", "organs") == f


# ---- a fake decoder that writes the reference ----------------------------------------------------

FINDINGS = "There is a small left pleural effusion. The heart is normal."
IMPRESSIONS = "Pleural effusion."


class _Volume:
    def __init__(self, vid: str, depth: int):
        self.vid, self.shape = vid, (depth, 8, 8)
        self.spacing_zyx = np.array([3.0, 1.5, 1.5])
        self.mask_names, self.z_extents = [], {}

    def slab(self, z0, z1):
        return np.zeros((z1 - z0, 8, 8), np.int16)

    def mask_slab(self, z0, z1, names=None):
        raise NotImplementedError


class _Cache:
    def __init__(self, depths=(5, 3, 4, 6)):
        self.root = Path("fake")
        self.config = SimpleNamespace(hu_window=(-1000.0, 1000.0))
        self._volumes = {f"v{n}": _Volume(f"v{n}", d) for n, d in enumerate(depths)}
        self.index = pd.DataFrame({"id": list(self._volumes), "split": "test", "findings": FINDINGS,
                                   "impressions": IMPRESSIONS, "num_slices": list(depths)})

    def volume(self, vid):
        return self._volumes[vid]

    def bad_volumes(self, ids):
        return []  # in memory: no file to be damaged


class _Decoder(nn.Module):
    def __init__(self, ids: list[int]):
        super().__init__()
        self.cfg = SimpleNamespace(max_length=64)
        self.ids, self.calls = ids, []

    def generate(self, memory, memory_mask, bos_id, eos_id, max_new_tokens, num_beams=1, **_):
        self.calls.append((tuple(memory.shape), tuple(memory_mask.shape), bos_id, eos_id, max_new_tokens, num_beams))
        return [list(self.ids) for _ in range(memory.shape[0])]


class _FakeCaptionModel(nn.Module):
    """Memory: one token per slice, real where the slice is; the decoder returns the tokens of ``text``
    (without [CLS], with [SEP] at the end, as ``ReportDecoder.generate`` does)."""

    def __init__(self, text: str):
        super().__init__()
        tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir())
        self.text = SimpleNamespace(tokenizer=tokenizer)
        self.decoder = _Decoder(tokenizer(text)["input_ids"][1:])
        self.cfg = SimpleNamespace(decoder=object())

    def image_features(self, image, slice_mask=None, voxels=False):
        return {"tokens": image.mean(dim=(1, 3, 4))[..., None], "token_mask": slice_mask.bool()}  # (B, D, 1)


@pytest.mark.parametrize("text", ["structured", "report"])
def test_a_decoder_that_writes_the_reference_scores_one(text):
    reference = report_text(FINDINGS, IMPRESSIONS, text)
    model = _FakeCaptionModel(reference)
    sampler = SamplerConfig(mode="whole", padding="zero", text=text)
    metrics = evaluate_generation(model, _Cache(), sampler, "test", max_new_tokens=40, beams=2)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "label_f1_micro", "label_f1", "bertscore_f1"):
        assert metrics[key] == pytest.approx(1.0, abs=1e-5), key
    assert metrics["n"] == 4 and [e["id"] for e in metrics["examples"]] == ["v0", "v1", "v2", "v3"][:3]
    first = metrics["examples"][0]
    assert first["reference"] == reference
    assert "[SEP]" not in first["generated"] and "[CLS]" not in first["generated"]  # special tokens skipped
    assert first["generated"].startswith("pleura : positive" if text == "structured" else "there is a small")
    (shape, mask_shape, bos, eos, max_new, beams), *_ = model.decoder.calls
    assert (bos, eos, max_new, beams) == (101, 102, 40, 2) and mask_shape == shape[:2]
    assert sum(c[0][0] for c in model.decoder.calls) == 4  # each volume decoded once
    json.dumps(metrics)


def test_max_volumes_and_missing_decoder():
    model = _FakeCaptionModel("no pleural effusion.")
    out = evaluate_generation(model, _Cache(), SamplerConfig(mode="whole", text="report"), "test", max_volumes=2)
    assert out["n"] == 2 and len(out["examples"]) == 2 and out["max_new_tokens"] == 64
    assert out["label_f1"] == pytest.approx(0.0) and 0.0 < out["rouge_l"] < 1.0
    model.cfg = SimpleNamespace(decoder=None)
    with pytest.raises(ValueError, match="report decoder.*colipri"):
        evaluate_generation(model, _Cache(), SamplerConfig(mode="whole", text="report"), "test")


# ---- end to end: the debug COLIPRI model on a synthetic cache --------------------------------

@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Cache:
    return Cache(make_synthetic_cache(tmp_path_factory.mktemp("geneval"), 16, 5))


def test_debug_colipri_generates_and_scores_finite_numbers(cache):
    cfg = get_recipe("colipri", debug=True)
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg.model)
    model.train()
    n_test = int((cache.index["split"] == "test").sum())
    for beams in (1, 2):
        metrics = evaluate_generation(model, cache, cfg.data.sampler, "test", max_new_tokens=12, beams=beams)
        assert model.training  # restored
        assert metrics["n"] == n_test and len(metrics["examples"]) == min(3, n_test)
        for key in ("bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "label_f1_micro"):
            assert 0.0 <= metrics[key] <= 1.0 and math.isfinite(metrics[key]), key
        assert math.isfinite(metrics["bertscore_f1"]) and ("meteor_unavailable" in metrics) == (metrics["meteor"] is None)
        assert metrics["label_f1"] is None or 0.0 <= metrics["label_f1"] <= 1.0
        assert metrics["examples"][0]["reference"].splitlines()[0].split(":")[1].strip() in ("positive", "negative")
        assert 0 <= metrics["mean_generated_words"] <= 12 * 2
        json.dumps(metrics)
    plain = VisionLanguageModel(get_recipe("segvl", debug=True).model)
    with pytest.raises(ValueError, match="model.decoder"):
        evaluate_generation(plain, cache, cfg.data.sampler, "test")
