"""The batch's one-way flow (issue 18): the collate makes every text-derived tensor (``ctvlp.data.text``),
the model's forward takes tensors and parses nothing, OSL pairs depend only on (seed, epoch, batch), and
a training sample is padded once, by the sampler, to its batch's depth."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from ctvlp.config import apply_overrides
from ctvlp.data.loader import Collate, CTDataset, SampleKey
from ctvlp.data.osl_pairs import OslPairs
from ctvlp.data.sampling import SamplerConfig
from ctvlp.data.text import TextProducts, osl_tensors, sentence_id, sentence_key, sentence_tensors
from ctvlp.recipes import get_recipe
from ctvlp.data.loader import set_epoch
from ctvlp.train.data import MODEL_INPUTS
from ctvlp.train.loop import Trainer, batches
from conftest import make_synthetic_cache
from test_losses_colipri import REPORTS
from test_loader import build_cache

pytestmark = pytest.mark.usefixtures("one_thread")


class WordTokenizer:
    """A stand-in for a Hugging Face tokenizer: [CLS]=1, each word its length + 10, [SEP]=2, right padding with 0."""

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        rows = [[1, *(10 + len(w) for w in t.split())][:max_length - 1] + [2] for t in texts]
        width = max(len(r) for r in rows)
        return {"input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
                "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])}


def test_sentence_tensors_golden():
    out = sentence_tensors([["B b.", "A."], ["A."], []], WordTokenizer(), max_length=8)
    distinct = ["", "A.", "B b."]  # sorted; the empty sample gets the empty string
    assert out["sentence_input_ids"].tolist() == [[1, 2, 0, 0], [1, 12, 2, 0], [1, 11, 12, 2]]
    assert out["sentence_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    assert out["sentence_ids"].tolist() == [sentence_id(t) for t in distinct] == out["sentence_keys"].tolist()
    assert out["sentence_owner"].tolist() == [0, 0, 1, 2] and out["sentence_index"].tolist() == [2, 1, 1, 0]
    assert out["sentence_targets"].tolist() == [[0, 1, 1], [0, 1, 0], [1, 0, 0]]
    assert out["sentence_targets"].dtype == torch.float32 and out["sentence_ids"].dtype == torch.int64


def test_sentence_keys_match_by_findings():
    same = ["No pleural effusion.", "There is no pleural effusion."]
    out = sentence_tensors([[same[0]], [same[1]], ["Heart is normal."]], WordTokenizer(), 32, match="findings")
    assert sentence_key(same[0], "findings") == sentence_key(same[1], "findings") != sentence_key(same[0], "text")
    assert out["sentence_targets"].tolist() == [[0, 1, 1], [0, 1, 1], [1, 0, 0]]  # columns: Heart, No, There


def test_osl_tensors_golden():
    pairs = OslPairs(pos_texts=[["Aa b.", ""], ["C.", "Aa b."]], neg_texts=[["No aa b.", ""], ["No c.", "No aa b."]],
                     is_true=[[True, False], [True, False]], valid=[[True, False], [True, True]])
    out = osl_tensors(pairs, WordTokenizer(), max_length=8)
    # distinct valid sentences, shortest first: "C.", "Aa b.", "No c.", "No aa b."
    assert out["osl_ids"].tolist() == [sentence_id(t) for t in ("C.", "Aa b.", "No c.", "No aa b.")]
    assert out["osl_index"].tolist() == [[[1, 0], [0, 1]], [[3, 0], [2, 3]]]  # (2, B, K): s+ rows, s- rows
    assert out["osl_mask"].tolist() == pairs.valid and out["osl_is_true"].tolist() == pairs.is_true
    assert out["osl_input_ids"].tolist()[0] == [1, 12, 2, 0, 0]


def _batch(reports: list[str]) -> dict:
    n = len(reports)
    return {"findings": reports, "text": reports, "sentences": [[r] for r in reports],
            "labels": torch.zeros(n, 2), "label_mask": torch.ones(n, 2, dtype=torch.bool)}


def test_osl_pairs_depend_only_on_seed_epoch_and_batch():
    make = TextProducts(WordTokenizer(), osl_pairs=4, seed=3)
    batch = _batch(REPORTS * 2)
    first = make(batch, epoch=1, index=5)
    assert all(torch.equal(first[k], v) for k, v in make(batch, 1, 5).items())
    assert all(torch.equal(first[k], v) for k, v in TextProducts(WordTokenizer(), osl_pairs=4, seed=3)(batch, 1, 5).items())
    others = [make(batch, 1, 6), make(batch, 2, 5), TextProducts(WordTokenizer(), osl_pairs=4, seed=4)(batch, 1, 5)]
    assert all(not torch.equal(first["osl_ids"], o["osl_ids"]) or not torch.equal(first["osl_index"], o["osl_index"])
               for o in others)
    assert torch.equal(first["label_targets"], batch["labels"]) and torch.equal(first["label_available"], batch["label_mask"])
    assert "sentence_ids" not in first and first["input_ids"].shape[0] == len(REPORTS) * 2


def test_sampler_pads_once_to_the_batch_depth_as_the_collate_would(tmp_path):
    cache = build_cache(tmp_path / "cache", [5, 9, 40, 7])
    for padding in ("repeat", "zero"):
        cfg = SamplerConfig(mode="whole", padding=padding, include_masks=True, mask_names=("lung", "heart"))
        ds = CTDataset(cache, cfg, seed=0)
        collate = Collate.for_dataset(ds)
        drawn = collate([ds[SampleKey(0, i, 0, 40)] for i in range(4)])  # padded once, by the sampler
        padded = collate([ds[i] for i in range(4)])  # unpadded samples: the collate pads them
        for key in ("image", "slice_mask", "masks"):
            assert torch.equal(drawn[key], padded[key]), key
        assert drawn["image"].shape[2] == 40 and drawn["slice_mask"].sum(1).tolist() == [5, 9, 40, 7]
    ds = CTDataset(cache, SamplerConfig(mode="whole", min_depth=8), seed=0)
    with pytest.raises(ValueError, match="cannot re-pad"):  # 5 slices padded to min_depth 8, then to 40
        Collate.for_dataset(ds)([ds[0], ds[2]])
    batch = Collate.for_dataset(ds)([ds[SampleKey(0, 0, 0, 40)], ds[SampleKey(0, 2, 0, 40)]])  # once, to 40
    assert batch["slice_mask"].sum(1).tolist() == [5, 40]


def test_no_report_parser_in_models():
    """No module of ``ctvlp.models`` imports the report parser or the OSL pair builder: parsing is the collate's."""
    parsers = {"ctvlp.data.reports", "ctvlp.data.osl_pairs"}
    for path in (Path(__file__).resolve().parents[1] / "src" / "ctvlp" / "models").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in parsers, f"{path.name} imports {node.module}"
            elif isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & parsers, path.name


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_synthetic_cache(tmp_path_factory.mktemp("batch_text"), 16, 5)


# The first debug batch's losses (eval mode) through the old path, models.vlp parsing and tokenising
# strings with the OSL pairs drawn from np.random.default_rng([seed, 0, 0, 7]) (commit f8cdf59, script in the
# branch h-flow's report): the collate's tensors give the same numbers.
OLD_PATH = {"colipri": {"clip": 1.4522926807403564, "osl": 0.6845309138298035, "caption": 10.311532974243164},
            "demo": {"sentence_sigmoid": 125.29692077636719, "siglip": 6.507462501525879}}


@pytest.mark.parametrize("name", sorted(OLD_PATH))
def test_forward_on_a_collated_batch_matches_the_old_path(cache, tmp_path, name):
    cfg = apply_overrides(get_recipe(name, debug=True), ["steps=2"])
    torch.manual_seed(0)
    trainer = Trainer(cfg, cache, tmp_path / name, progress=False)
    model, objective = trainer.model.eval(), trainer.objectives["pairs"]
    epoch, index, batch = next(batches(trainer.loader, 0, 0))
    assert not any(isinstance(batch.get(k), list) for k in MODEL_INPUTS)  # tensors only reach the model
    with torch.no_grad():
        out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, mask_names=batch.get("mask_names"),
                    label_names=trainer.label_names(), outputs=objective.outputs)
        parts = objective(**{k: batch[k] for k in objective.batch_keys if k in batch}, **out)
    for term, value in OLD_PATH[name].items():
        assert float(parts[term]) == pytest.approx(value, rel=1e-5), term


def test_resumed_loader_gives_the_same_osl_pairs(cache, tmp_path):
    cfg = apply_overrides(get_recipe("colipri", debug=True), ["steps=2"])
    trainer = Trainer(cfg, cache, tmp_path / "colipri", progress=False)
    set_epoch(trainer.loader, 1)
    second = list(trainer.loader)[1]
    set_epoch(trainer.loader, 1, 1)  # resume at batch 1 of epoch 1
    resumed = next(iter(trainer.loader))
    assert resumed["id"] == second["id"] and second["osl_mask"].any()
    for key in ("osl_ids", "osl_index", "osl_mask", "osl_input_ids", "input_ids"):
        assert torch.equal(resumed[key], second[key]), key
    set_epoch(trainer.loader, 1)
    assert not torch.equal(list(trainer.loader)[0]["osl_ids"], second["osl_ids"])  # another batch, other pairs
