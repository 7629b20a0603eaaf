"""The objective: weighted terms from ctvlp.losses, their options, and config validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ctvlp.config import ConfigError, apply_overrides
from ctvlp.losses import sentence_sigmoid_loss, siglip_loss
from ctvlp.recipes import get_recipe
from ctvlp.train.config import LossConfig
from ctvlp.train.objective import Objective


def _outputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image_emb": F.normalize(torch.randn(3, 4, generator=g), dim=1),
            "text_emb": F.normalize(torch.randn(3, 4, generator=g), dim=1),
            "sentence_emb": F.normalize(torch.randn(5, 4, generator=g), dim=1),
            "sentence_targets": (torch.rand(3, 5, generator=g) > 0.5).float(),
            "logit_scale": torch.tensor(10.0), "logit_bias": torch.tensor(-5.0)}


def test_total_is_the_weighted_sum_of_the_terms():
    out = _outputs()
    parts = Objective(LossConfig(name="siglip", weights={"sentence_sigmoid": 0.5}))(**out)
    siglip = siglip_loss(out["image_emb"], out["text_emb"], out["logit_scale"], out["logit_bias"])
    sentences = sentence_sigmoid_loss(out["image_emb"], out["sentence_emb"], out["sentence_targets"],
                                      out["logit_scale"], out["logit_bias"])
    torch.testing.assert_close(parts["siglip"], siglip)
    torch.testing.assert_close(parts["sentence_sigmoid"], sentences)
    torch.testing.assert_close(parts["loss"], siglip + 0.5 * sentences)


def test_options_reach_the_loss_module_and_unknown_ones_are_named():
    objective = Objective(LossConfig(name="clip", weights={"tversky": 0.75},
                                     options={"tversky": {"alpha": 0.3, "beta": 0.7}}))
    assert objective.terms["tversky"].alpha == 0.3 and objective.terms["tversky"].beta == 0.7
    with pytest.raises(ValueError, match=r"loss.options.siglip: SigLipLoss takes no \['temperature'\]"):
        Objective(LossConfig(options={"siglip": {"temperature": 1.0}}))


def test_main_term_weight_and_the_outputs_an_objective_reads():
    """SegVL's mask steps weigh their main term by alpha_seg; each objective names the model outputs it reads."""
    masks = Objective(LossConfig(name="tversky", weights={"tversky": 0.75}))
    assert masks.weights == {"tversky": 0.75} and masks.outputs == ("seg",)
    colipri = Objective(LossConfig(name="clip", weights={"osl": 0.5, "caption": 1.0}))
    assert colipri.outputs == ("pairs", "osl", "caption")


def test_stages_give_each_step_its_kind():
    cfg = apply_overrides(get_recipe("demo"), ["steps=10", "tasks={masks: {name: tversky}}",
                                               "stages=[{fraction: 0.3}, {cycle: [pairs, masks], frozen: [seg.]}]"])
    kinds = [cfg.task_at(step)[0] for step in range(8)]
    assert kinds == ["pairs"] * 3 + ["pairs", "masks", "pairs", "masks", "pairs"]
    assert cfg.task_at(0)[1].frozen == () and cfg.task_at(5)[1].frozen == ("seg.",)
    assert cfg.all_terms == ["sentence_sigmoid", "siglip", "tversky"]


@pytest.mark.parametrize("overrides, message", [
    (["loss.weights={focal: 1.0}"], "unknown term 'focal'"),
    (["loss.name=tversky"], "image-report objective.*must be one of siglip, clip, sentence_sigmoid, swca"),
    (["stages=[{cycle: [pairs, masks]}]"], r"names \['masks'\], which are not in tasks"),
    (["tasks={masks: {name: tversky}}", "stages=[{cycle: [masks]}, {fraction: 0.5}]"], "only allowed for the last stage"),
    (["tasks={pairs: {name: tversky}}"], "'pairs' is the name of the image-report objective"),
    (["loss.weights={osl: -1.0}"], "must be >= 0"),
    (["loss.options={tversky: {alpha: 0.3}}"], "'tversky' is not a term"),
    (["loss.name=sentence_sigmoid", "model.text_input=text"], "needs model.text_input='sentences'"),
])
def test_bad_loss_configs_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_recipe("demo"), overrides)
