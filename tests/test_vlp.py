"""The two-tower model: output dict for the losses, sentence mode and its memo, heads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctvlp.data.text import sentence_id
from ctvlp.losses import SigLipLoss
from ctvlp.models.heads import AttentionPool, Projection, masked_max, masked_mean
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import vit_config
from ctvlp.models.vlp import ModelConfig, VisionLanguageModel


def _model(text_input="text", freeze="none", projection="linear") -> VisionLanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)), embed_dim=16, projection=projection,
                      text=TextTowerConfig(name="tiny", freeze=freeze), text_input=text_input)
    return VisionLanguageModel(cfg)


def test_output_dict_feeds_the_loss():
    model = _model()
    tokens = model.tokenize(["No pleural effusion.", "Cardiomegaly."])
    image, slice_mask = torch.randn(2, 1, 8, 16, 16), torch.ones(2, 8, dtype=torch.bool)
    out = model(image=image, slice_mask=slice_mask, **tokens)
    assert set(out) == {"image_emb", "text_emb", "logit_scale", "logit_bias", "tokens", "token_mask", "report_emb"}
    assert out["image_emb"].shape == out["text_emb"].shape == (2, 16)
    assert out["tokens"].shape[:2] == out["token_mask"].shape and not out["report_emb"].requires_grad
    model.eval()  # same numbers as the separate encoders (dropout-free comparison)
    out = model(image=image, slice_mask=slice_mask, **tokens)
    torch.testing.assert_close(out["image_emb"], model.encode_image(image, slice_mask))
    torch.testing.assert_close(out["text_emb"], model.encode_text(**tokens))
    model.train()
    assert torch.allclose(out["image_emb"].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert out["logit_scale"].item() == pytest.approx(10.0, rel=1e-5)  # exp(log 10)
    SigLipLoss(gather=False)(**out).backward()
    assert model.logit_scale.grad is not None and model.logit_bias.grad is not None


def test_logit_scale_is_clamped():
    model = _model()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1e4))
    assert model.scale().item() == pytest.approx(100.0)


def test_sentence_mode_is_the_mean_of_projected_sentences_and_memo_matches():
    model = _model("sentences", freeze="all").eval()
    groups = [["No pleural effusion.", "Heart normal."], ["Cardiomegaly."]]
    emb = model.encode_sentences(groups, normalize=False)
    feats = model.text.encode(["No pleural effusion.", "Heart normal.", "Cardiomegaly."])
    proj = model.text_proj(feats)
    assert torch.allclose(emb[0], proj[:2].mean(0), atol=1e-5) and torch.allclose(emb[1], proj[2], atol=1e-5)
    assert set(model._sentence_features) == {sentence_id(t) for t in ("No pleural effusion.", "Heart normal.",
                                                                     "Cardiomegaly.")}  # the memo keys by sentence id
    again = model.encode_sentences(groups, normalize=False)  # served from the memo
    assert torch.equal(emb, again)
    assert torch.allclose(model.encode_texts(["No pleural effusion. Heart normal."], normalize=False)[0], emb[0],
                          atol=1e-5)


def test_frozen_text_tower_stays_in_eval_mode():
    model = _model("sentences", freeze="all").train()
    assert model.vision.training and not model.text.training
    assert not any(p.requires_grad for p in model.text.parameters())


def test_max_pooled_image_ignores_padded_slices():
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8), pos="rope"), embed_dim=16, image_pool="max",
                      text=TextTowerConfig(name="tiny"))
    model = VisionLanguageModel(cfg).eval()
    image, mask = torch.randn(2, 1, 8, 16, 16), torch.ones(2, 8, dtype=torch.bool)
    mask[0, 4:] = False  # sample 0: 4 real slices, then padding
    changed = image.clone()
    changed[0, :, 4:] = 5.0
    # keys in padded slices are masked out of attention and their tokens out of the max
    assert torch.allclose(model.encode_image(image, mask), model.encode_image(changed, mask), atol=1e-5)
    assert not torch.allclose(model.encode_image(image), model.encode_image(changed), atol=1e-3)
    with pytest.raises(ValueError, match="image_pool"):
        ModelConfig(image_pool="sum")


def test_heads():
    tokens, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.allclose(masked_mean(tokens, mask)[0], tokens[0, :3].mean(0))
    golden = torch.tensor([[[1.0, -5.0], [3.0, -2.0], [9.0, 9.0]]])  # (1, 3, 2); third token padded
    assert masked_max(golden, torch.tensor([[True, True, False]])).tolist() == [[3.0, -2.0]]
    assert masked_max(golden, None).tolist() == [[9.0, 9.0]]
    pool = AttentionPool(8, heads=2, norm=True, init="linear")  # the image "attention" pool
    changed = tokens.clone()
    changed[0, 3:] = 100.0  # padded tokens must not matter
    assert torch.allclose(pool(tokens, mask), pool(changed, mask), atol=1e-6)
    head = Projection(8, 4, "mlp_bn").train()
    out = head(torch.randn(6, 8) + 50.0)  # a shared offset is removed by the batch norm
    assert out.shape == (6, 4)
    with pytest.raises(ValueError, match="projection must be"):
        Projection(8, 4, "deep")


def test_projected_attention_pool_matches_a_plain_reference_and_ignores_padding():
    """COLIPRI's head: Linear to dim, then one query (mean of the projected valid tokens) attending over them
    per head (softmax(q k / sqrt(d)) v), heads joined by the output projection; padded tokens change nothing."""
    torch.manual_seed(0)
    pool = AttentionPool(6, heads=2, dim=8)  # COLIPRI's projected_attention
    with torch.no_grad():
        pool.attn.in_proj_bias.normal_(), pool.attn.out_proj.bias.normal_()
    tokens, mask = torch.randn(2, 5, 6), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    out = pool(tokens, mask)
    wq, wk, wv = pool.attn.in_proj_weight.chunk(3)
    bq, bk, bv = pool.attn.in_proj_bias.chunk(3)
    for b, n in ((0, 3), (1, 5)):
        x = pool.proj(tokens[b, :n])  # (n, 8)
        q, k, v = x.mean(0) @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv
        heads = [torch.softmax(k[:, h] @ q[h] / 2.0, dim=0) @ v[:, h] for h in (slice(0, 4), slice(4, 8))]
        torch.testing.assert_close(out[b], pool.attn.out_proj(torch.cat(heads)), atol=1e-6, rtol=1e-5)
    changed = tokens.clone()
    changed[0, 3:] = 100.0
    torch.testing.assert_close(pool(changed, mask), out)
    torch.testing.assert_close(pool(tokens[1:]), out[1:])  # no mask: every token
    with pytest.raises(ValueError, match="image_pool_heads"):
        AttentionPool(6, heads=3, dim=8)


def test_image_attention_pool_keeps_its_former_weights_and_layout():
    """The image ``attention`` pool was written with its own q, kv and out linears: ``init="linear"`` draws
    the same numbers in the same order, a state dict of that layout loads, and the output equals the plain
    computation from those linears (LayerNorm, mean query, softmax(q k / sqrt(d)) v per head, out)."""
    torch.manual_seed(0)
    q, kv, out = nn.Linear(8, 8), nn.Linear(8, 16), nn.Linear(8, 8)
    after = torch.rand(3)
    torch.manual_seed(0)
    pool = AttentionPool(8, heads=2, norm=True, init="linear")
    assert torch.equal(torch.rand(3), after)  # the same draws, so every later module starts the same too
    assert torch.equal(pool.attn.in_proj_weight, torch.cat((q.weight, kv.weight)))
    assert torch.equal(pool.attn.out_proj.bias, out.bias)
    old = {"norm.weight": torch.rand(8), "norm.bias": torch.randn(8), "q.weight": torch.randn(8, 8),
           "q.bias": torch.randn(8), "kv.weight": torch.randn(16, 8), "kv.bias": torch.randn(16),
           "out.weight": torch.randn(8, 8), "out.bias": torch.randn(8)}
    pool.load_state_dict(old)
    tokens, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    got = pool(tokens, mask)
    for b, n in ((0, 3), (1, 5)):
        x = F.layer_norm(tokens[b, :n], (8,), old["norm.weight"], old["norm.bias"])  # (n, 8)
        query = x.mean(0) @ old["q.weight"].T + old["q.bias"]  # (8,)
        k, v = (x @ old["kv.weight"].T + old["kv.bias"]).split(8, dim=1)  # 2 x (n, 8)
        heads = [torch.softmax(k[:, h] @ query[h] / 2.0, dim=0) @ v[:, h] for h in (slice(0, 4), slice(4, 8))]
        want = torch.cat(heads) @ old["out.weight"].T + old["out.bias"]
        torch.testing.assert_close(got[b], want, atol=1e-6, rtol=1e-5)


def test_projected_attention_pool_replaces_the_image_projection():
    torch.manual_seed(0)
    cfg = ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)), embed_dim=16, image_pool="projected_attention",
                      image_pool_heads=4, text=TextTowerConfig(name="tiny"))
    model = VisionLanguageModel(cfg).eval()
    assert isinstance(model.image_proj, torch.nn.Identity) and model.image_pool.attn.num_heads == 4
    image = torch.randn(2, 1, 8, 16, 16)
    feats = model.image_features(image)
    assert feats["pooled"].shape == (2, 16)
    torch.testing.assert_close(model.encode_image(image), torch.nn.functional.normalize(feats["pooled"], dim=-1))
    with pytest.raises(ValueError, match="image_pool_heads"):
        ModelConfig(embed_dim=16, image_pool="projected_attention")  # 12 heads do not divide 16


def test_mlp_ln_projection_is_segvls_head():
    """SegVL's heads: Linear, LeakyReLU, LayerNorm, Linear; the LayerNorm makes the hidden features zero-mean,
    unit-variance per sample, whatever the input's scale."""
    torch.manual_seed(0)
    head = Projection(16, 8, "mlp_ln")
    assert [type(m).__name__ for m in head.net] == ["Linear", "LeakyReLU", "LayerNorm", "Linear"]
    x = torch.randn(4, 16)
    hidden = head.net[:3](x * 1000.0)  # (4, 16)
    torch.testing.assert_close(hidden.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    manual = torch.nn.functional.leaky_relu(head.net[0](x))
    manual = (manual - manual.mean(-1, keepdim=True)) / torch.sqrt(manual.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(head(x), head.net[3](manual * head.net[2].weight + head.net[2].bias))


def test_none_projection_keeps_the_features_and_needs_equal_widths():
    """COLIPRI's text side has no projector: ``text_projection="none"`` passes the pooled features through."""
    x = torch.randn(3, 8)
    torch.testing.assert_close(Projection(8, 8, "none")(x), x)
    with pytest.raises(ValueError, match="width 64 must equal embed_dim 32"):
        Projection(64, 32, "none")
    model = VisionLanguageModel(ModelConfig(vision=vit_config("debug", patch=(4, 8, 8)),
                                            text=TextTowerConfig(name="tiny"), embed_dim=64, text_projection="none"))
    assert isinstance(model.text_proj.net, torch.nn.Identity) and isinstance(model.image_proj.net, torch.nn.Linear)
