"""CTViT (CT-CLIP's encoder): sizes, shapes, the causal PEG, gradients, bad input."""

import pytest
import torch

from ctvlp.models.ctvit import PEG, CTViT, CTViTConfig, ctvit_config
from ctvlp.models.vit3d import create_vision_tower


def test_paper_size_matches_ct_clip():
    cfg = ctvit_config("ctclip")
    assert cfg.patch == (10, 20, 20) and cfg.image_size == (240, 480, 480) and cfg.grid == (24, 24, 24)
    assert (cfg.width, cfg.spatial_depth, cfg.temporal_depth, cfg.heads, cfg.head_dim) == (512, 4, 4, 8, 32)
    assert (cfg.codebook_size, cfg.vq_decay, cfg.attn_scale) == (8192, 0.8, 8.0)
    assert cfg.pooled_width == 24 * 24 * 512


def test_debug_tower_shapes_and_factory():
    torch.manual_seed(0)
    cfg = ctvit_config("debug")
    model = create_vision_tower(cfg).eval()
    assert isinstance(model, CTViT)
    out = model(torch.randn(2, 1, *cfg.image_size))
    n = 2 * 4 * 4
    assert out["tokens"].shape == (2, n, 32) and out["tokens_pre_vq"].shape == (2, n, 32)
    assert out["grid"] == (2, 4, 4) and out["token_mask"].all()
    assert out["pooled"].shape == (2, cfg.pooled_width) == (2, 4 * 4 * 32)
    # eval: the quantised tokens are codebook rows (unit norm), the pooled feature is their slab mean
    assert torch.allclose(out["tokens"], model.vq.embed[out["codes"]])
    assert torch.allclose(out["tokens"].norm(dim=-1), torch.ones(2, n), atol=1e-5)
    ref = out["tokens"].view(2, 2, 4, 4, 32).mean(1).flatten(1)
    assert torch.allclose(out["pooled"], ref)


def test_peg_is_causal_in_z():
    torch.manual_seed(0)
    peg = PEG(4, causal=True)
    x = torch.randn(1, 5, 3, 3, 4)  # (B, Z, Y, X, d)
    y = peg(x, (1, 5, 3, 3))
    x2 = x.clone()
    x2[:, 3] += 1.0  # change slab 3
    y2 = peg(x2, (1, 5, 3, 3))
    assert torch.equal(y[:, :3], y2[:, :3])  # earlier slabs unchanged
    assert not torch.allclose(y[:, 3], y2[:, 3]) and not torch.allclose(y[:, 4], y2[:, 4])


def test_gradients_reach_every_trained_parameter_and_codebook_moves():
    torch.manual_seed(0)
    model = CTViT(ctvit_config("debug")).train()
    before = model.vq.embed.clone()
    out = model(torch.randn(2, 1, 8, 32, 32))
    (out["pooled"].square().sum() + out["vq_loss"]).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
    assert not torch.equal(model.vq.embed, before)  # EMA update
    assert torch.allclose(model.vq.embed.norm(dim=-1), torch.ones(64), atol=1e-5)


def test_bad_shapes_and_configs_are_named():
    model = CTViT(ctvit_config("debug"))
    with pytest.raises(ValueError, match="CTViT expects"):
        model(torch.randn(1, 1, 8, 32, 40))
    with pytest.raises(ValueError, match="multiple of patch"):
        CTViTConfig(image_size=(8, 30, 32), patch=(4, 8, 8))
    with pytest.raises(ValueError, match="unknown CTViT size"):
        ctvit_config("huge")
    with pytest.raises(ValueError, match="unknown CTViTConfig fields"):
        ctvit_config("debug", depth=3)
