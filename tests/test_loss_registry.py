"""The loss registry (ctvlp.losses.registry): the one place that says what each loss reads and needs."""

from __future__ import annotations

import inspect
from itertools import combinations

import pytest

from ctvlp.config import apply_overrides
from ctvlp.losses.base import NEEDS, Loss
from ctvlp.losses.registry import CONTRASTIVE, LOSS_NAMES, LOSSES, loss_class, reads, uses_logit_bias
from ctvlp.models.vlp import OUTPUT_GROUPS
from ctvlp.recipes import get_recipe
from ctvlp.train.config import LossConfig
from ctvlp.train.objective import Objective
from ctvlp.train.requirements import PROVIDERS, needs


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_declares_its_facts_in_known_words(name):
    cls = LOSSES[name]
    assert issubclass(cls, Loss) and cls.reads, name
    assert set(cls.reads) <= set(OUTPUT_GROUPS) and set(cls.needs({})) <= set(NEEDS)
    forward = inspect.signature(cls.forward).parameters
    assert any(p.kind is p.VAR_KEYWORD for p in forward.values())  # loss_fn(**outputs) ignores the rest
    assert set(cls.batch_keys) <= set(forward)


def test_the_registry_keeps_the_facts_of_before():
    """The lists the registry replaced (LOSS_NAMES, CONTRASTIVE, READS, TEXT_TERMS, the logit-bias rule and
    TrainConfig's sentence-input check)."""
    assert LOSS_NAMES == ("siglip", "clip", "sentence_sigmoid", "swca", "tversky", "masked_bce", "osl", "caption",
                          "mae")
    assert CONTRASTIVE == ("siglip", "clip", "sentence_sigmoid", "swca")
    assert {n: LOSSES[n].reads for n in LOSSES} == {
        "siglip": ("pairs",), "clip": ("pairs",), "sentence_sigmoid": ("pairs",), "swca": ("pairs",),
        "tversky": ("seg",), "masked_bce": ("labels",), "osl": ("osl",), "caption": ("caption",), "mae": ("mae",)}
    text = tuple(n for n in LOSSES if "report text" in LOSSES[n].needs({}))
    assert text == ("siglip", "clip", "sentence_sigmoid", "swca", "osl", "caption")
    assert set(PROVIDERS) == set(NEEDS)
    assert {n: LOSSES[n].text_input for n in LOSSES if LOSSES[n].text_input} == {"sentence_sigmoid": "sentences"}
    for k in range(1, 4):  # the trainer's old rule, on every objective with an image-report term
        for terms in combinations(LOSS_NAMES, k):
            if set(terms) & set(CONTRASTIVE):
                old = not {"siglip", "swca", "sentence_sigmoid"} & set(terms) and "clip" in terms
                assert uses_logit_bias(terms) is not old, terms


def test_option_dependent_needs_and_batch_keys():
    assert loss_class("swca").needs({"knowledge": "labels"}) == ("report text", "labels")
    assert loss_class("swca").needs({}) == ("report text",)
    labels = {"swca": {"knowledge": "labels"}}
    objective = Objective(LossConfig(name="swca", weights={"masked_bce": 1.0}, options=labels))
    assert objective.batch_keys == ("labels", "label_targets", "label_available")
    assert Objective(LossConfig(name="clip", weights={"osl": 0.5})).batch_keys == ()
    assert reads(["clip", "osl", "siglip", "mae"]) == ("pairs", "osl", "mae")
    cfg = apply_overrides(get_recipe("scalevlp", debug=True), ["loss.options={swca: {knowledge: labels}}",
                                                                "tasks={masks: {name: tversky}}"])
    assert needs(cfg) == {"report text": ["swca"], "labels": ["swca"], "masks": ["tversky"]}
    with pytest.raises(ValueError, match="unknown loss 'focal'; losses: siglip, clip"):
        loss_class("focal")
