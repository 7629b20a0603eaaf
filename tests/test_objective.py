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


@pytest.mark.parametrize("overrides, message", [
    (["loss.weights={focal: 1.0}"], "unknown term 'focal'"),
    (["loss.weights={sentence_sigmoid: 1.0}"], "already the main term"),
    (["loss.weights={osl: -1.0}"], "must be >= 0"),
    (["loss.options={tversky: {alpha: 0.3}}"], "'tversky' is not a term"),
    (["loss.name=sentence_sigmoid", "model.text_input=text"], "needs model.text_input='sentences'"),
])
def test_bad_loss_configs_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_recipe("demo"), overrides)
