"""``VisionLanguageModel._osl_outputs`` encodes each distinct OSL sentence once per batch (length-sorted
chunks); its outputs and gradients equal encoding every valid slot, as it did before."""

from __future__ import annotations

import pytest
import torch

from ctvlp.data.osl_pairs import OslPairs, build_osl_pairs
from ctvlp.data.text import osl_tensors
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig, VisionLanguageModel
from test_losses_colipri import REPORTS


def _model(text_input: str = "text", freeze: str = "none", pooling: str = "mean") -> VisionLanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)), embed_dim=16, text_input=text_input,
                      text=TextTowerConfig(name="tiny", freeze=freeze, pooling=pooling))
    return VisionLanguageModel(cfg).eval()  # dropout-free: the two paths must give the same numbers


def per_slot_osl_outputs(model: VisionLanguageModel, osl: dict) -> dict[str, torch.Tensor]:
    """The method as it was: every valid slot's sentence through ``encode_texts``, repeats included."""
    valid = torch.tensor(osl["valid"], dtype=torch.bool)
    b, k = valid.shape
    texts = [t for side in ("pos_texts", "neg_texts") for row in osl[side] for t in row]
    flat = torch.cat((valid.flatten(), valid.flatten()))
    emb = torch.zeros(2 * b * k, model.cfg.embed_dim)
    if flat.any():
        emb = emb.index_put((flat.nonzero()[:, 0],),
                            model.encode_texts([t for t, v in zip(texts, flat.tolist()) if v]).to(emb.dtype))
    pos, neg = emb.view(2, b, k, -1)
    return {"osl_pos_emb": pos, "osl_neg_emb": neg, "osl_mask": valid,
            "osl_is_true": torch.tensor(osl["is_true"], dtype=torch.bool)}


def _tensors(model: VisionLanguageModel, osl: dict) -> dict[str, torch.Tensor]:
    """The collate's OSL tensors of the pairs ``osl`` for ``model``."""
    return osl_tensors(OslPairs(**osl), model.text.tokenizer, model.text.cfg.max_length)


def _pairs(n_reports: int = 8, k: int = 8, seed: int = 0) -> dict:
    return build_osl_pairs((REPORTS * n_reports)[:n_reports], k=k, rng=seed)._asdict()


def test_batch_repeats_sentences_and_needs_several_chunks():
    osl = _pairs()
    valid = [t for side in ("pos_texts", "neg_texts") for row, ok in zip(osl[side], osl["valid"])
             for t, v in zip(row, ok) if v]
    assert len(set(valid)) < len(valid)  # pairs repeat across images: what the method saves
    assert len(set(valid)) > 16  # more than one chunk of distinct sentences


@pytest.mark.parametrize("text_input,freeze,pooling", [("text", "none", "mean"), ("text", "none", "attention"),
                                                       ("text", "all", "attention"), ("sentences", "all", "mean"),
                                                       ("sentences", "none", "mean")])
def test_outputs_and_gradients_equal_per_slot_encoding(text_input, freeze, pooling):
    model = _model(text_input, freeze, pooling)
    osl = _pairs()
    weights = torch.randn(2, 8, 8, 16, generator=torch.Generator().manual_seed(1))
    results = []
    for fn in (lambda o: model._osl_outputs(**_tensors(model, o)), lambda o: per_slot_osl_outputs(model, o)):
        model.zero_grad(set_to_none=True)
        out = fn(osl)
        (weights[0] * out["osl_pos_emb"] + weights[1] * out["osl_neg_emb"]).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (out, grads), (ref, ref_grads) = results
    assert set(out) == set(ref)
    for key in ("osl_mask", "osl_is_true"):
        assert out[key].dtype == torch.bool and torch.equal(out[key], ref[key])
    for key in ("osl_pos_emb", "osl_neg_emb"):
        assert out[key].shape == ref[key].shape == (8, 8, 16) and out[key].dtype == ref[key].dtype
        torch.testing.assert_close(out[key], ref[key], rtol=1e-5, atol=1e-6)
        assert torch.all(out[key][~out["osl_mask"]] == 0)  # invalid slots stay zero vectors
    assert set(grads) == set(ref_grads) and grads  # the same parameters get gradients
    for name, grad in grads.items():  # summed over repeats vs once: float rounding, relative to the scale
        ref_grad = ref_grads[name]
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6 * max(1.0, ref_grad.abs().max().item()),
                                   msg=name)


def test_no_valid_pair_gives_zeros():
    model = _model()
    osl = build_osl_pairs([REPORTS[2]], k=4, rng=0)._asdict()  # one normal scan: no pair at all
    assert not any(v for row in osl["valid"] for v in row)
    out = model._osl_outputs(**_tensors(model, osl))
    assert out["osl_pos_emb"].shape == out["osl_neg_emb"].shape == (1, 4, 16)
    assert torch.all(out["osl_pos_emb"] == 0) and torch.all(out["osl_neg_emb"] == 0)
    assert not out["osl_mask"].any()
