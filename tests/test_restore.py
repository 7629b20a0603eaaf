"""`load_trained`: a checkpoint becomes the same model (same outputs), or a clear CheckpointError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ctvlp.config import apply_overrides
from ctvlp.models.store import CheckpointError, load_checkpoint
from ctvlp.recipes import get_recipe
from ctvlp.train.checkpoint import save_checkpoint
from ctvlp.train.loop import Trainer
from ctvlp.recipes.run import load_trained
from conftest import make_synthetic_cache

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_synthetic_cache(tmp_path_factory.mktemp("restore"), 12, 5)


@pytest.mark.parametrize("recipe", ["demo", "segvl", "colipri"])
def test_checkpoint_restores_the_same_model(cache, tmp_path, recipe):
    cfg = apply_overrides(get_recipe(recipe, debug=True), ["steps=1"])
    trainer = Trainer(cfg, cache, tmp_path / "run", progress=False)
    trainer.fit()
    trained = load_trained(tmp_path / "run")  # the run folder: its latest checkpoint
    assert trained.step == 1 and trained.config == cfg and not trained.model.training
    assert trained.preprocess == trainer.cache.config
    assert trained.label_names == trainer.label_names()
    ours, theirs = trained.model.state_dict(), trainer.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    trainer.model.eval()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(2, cfg.model.vision.in_chans, 16, 32, 32, generator=g)
    with torch.no_grad():
        assert torch.allclose(trained.model.encode_image(image), trainer.model.encode_image(image), atol=1e-6)
        texts = ["No pleural effusion.", "Emphysema in both upper lobes."]
        assert torch.allclose(trained.model.encode_texts(texts), trainer.model.encode_texts(texts), atol=1e-6)


def test_a_checkpoint_that_does_not_fit_is_a_clear_error(cache, tmp_path):
    cfg = apply_overrides(get_recipe("demo", debug=True), ["steps=1"])
    Trainer(cfg, cache, tmp_path / "run", progress=False).fit()
    state = load_checkpoint(tmp_path / "run")
    state.pop("path")
    bad_config = {**state, "config": {**state["config"], "no_such_field": 1}}
    with pytest.raises(CheckpointError, match="config does not fit"):
        load_trained(save_checkpoint(tmp_path / "a", bad_config, keep_last=1))
    weights = dict(state["model"])
    weights.pop(next(iter(weights)))
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_trained(save_checkpoint(tmp_path / "b", {**state, "model": weights}, keep_last=1))
