"""SegVL voxel head: shapes (anisotropic patches, overshooting grids), unpatchify placement, anchor
probabilities, prompts and anchor head, mask resizing, the Tversky outputs, visual enhancement at init,
and a few optimisation steps fitting a blob."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctvlp.losses.tversky import TverskyLoss
from ctvlp.models.vit3d import VisionTransformer3d, vit_config
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.models.voxel_head import (AnchorHead, VisualEnhancement, VoxelHead, VoxelHeadConfig,
                                     anchor_probabilities, anchor_prompts, resize_masks,
                                     segmentation_outputs, zero_shot_segment)


pytestmark = pytest.mark.usefixtures("one_thread")


class Fixed(nn.Module):
    """Stands in for the MLP: returns a given (B, N, P * E) tensor whatever the tokens."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out


def test_config_validation():
    assert VoxelHeadConfig(patch=4).patch == (4, 4, 4)
    assert VoxelHeadConfig(patch=(2, 3, 4)).voxels_per_token == 24
    for bad in (dict(patch=(2, 3)), dict(patch=(0, 1, 1)), dict(embed_dim=0), dict(hidden=0)):
        with pytest.raises(ValueError):
            VoxelHeadConfig(**bad)


def test_shapes_anisotropic_and_overshoot():
    torch.manual_seed(0)
    head = VoxelHead(VoxelHeadConfig(embed_dim=5, hidden=16, patch=(2, 3, 4)), width=12)
    tokens = torch.randn(2, 3 * 2 * 2, 12)  # grid (3, 2, 2) covers (6, 6, 8) voxels
    assert head(tokens, (3, 2, 2)).shape == (2, 5, 6, 6, 8)
    cropped = head(tokens, (3, 2, 2), size=(5, 6, 7))  # depth and width overshoot the input
    assert cropped.shape == (2, 5, 5, 6, 7)
    assert torch.equal(cropped, head(tokens, (3, 2, 2))[:, :, :5, :6, :7])
    with pytest.raises(ValueError):
        head(tokens, (3, 2, 2), size=(7, 6, 8))  # larger than the grid
    with pytest.raises(ValueError):
        head(tokens, (2, 2, 2))  # N does not match the grid
    with pytest.raises(ValueError):
        head(torch.randn(2, 12, 11), (3, 2, 2))  # wrong width


def test_unpatchify_places_a_token_block():
    cfg = VoxelHeadConfig(embed_dim=3, hidden=4, patch=(2, 3, 4))
    head = VoxelHead(cfg, width=8)
    grid, (iz, iy, ix) = (3, 2, 2), (1, 0, 1)
    n = (iz * grid[1] + iy) * grid[2] + ix  # z-major index of the token
    pattern = torch.arange(24 * 3, dtype=torch.float32) + 1  # (P * E,) in (z, y, x, E) order
    out = torch.zeros(1, 12, 24 * 3)
    out[0, n] = pattern
    head.mlp = Fixed(out)
    voxels = head(torch.zeros(1, 12, 8), grid)  # (1, 3, 6, 6, 8)
    block = voxels[0, :, iz * 2:(iz + 1) * 2, iy * 3:(iy + 1) * 3, ix * 4:(ix + 1) * 4]  # (E, pz, py, px)
    assert torch.equal(block, pattern.view(2, 3, 4, 3).permute(3, 0, 1, 2))
    assert voxels.abs().sum() == block.abs().sum()  # nothing else is set
    # Voxel (z, y, x) = (2 + 1, 2, 4 + 3), channel 1: pattern index ((1 * 3 + 2) * 4 + 3) * 3 + 1.
    assert voxels[0, 1, 3, 2, 7] == pattern[((1 * 3 + 2) * 4 + 3) * 3 + 1]


def test_for_tower_checks_the_patch():
    tower = VisionTransformer3d(vit_config("debug", width=24, depth=1, heads=2, patch=(2, 4, 4)))
    head = VoxelHead.for_tower(VoxelHeadConfig(embed_dim=4, hidden=8, patch=(2, 4, 4)), tower)
    assert head.width == 24
    with pytest.raises(ValueError):
        VoxelHead.for_tower(VoxelHeadConfig(patch=(4, 4, 4)), tower)


def test_anchor_probabilities_range_and_extremes():
    torch.manual_seed(0)
    anchors = torch.randn(3, 6)
    voxels = torch.randn(2, 6, 3, 4, 5)
    voxels[0, :, 0, 0, 0] = 2.5 * anchors[1]  # same direction as anchor 1
    voxels[1, :, 2, 3, 4] = -anchors[2]  # opposite of anchor 2
    voxels[1, :, 1, 1, 1] = 0.0  # a zero voxel
    p = anchor_probabilities(voxels, anchors)
    assert p.shape == (2, 3, 3, 4, 5) and p.min() >= 0 and p.max() <= 1
    assert torch.isclose(p[0, 1, 0, 0, 0], torch.tensor(1.0), atol=1e-6)
    assert torch.isclose(p[1, 2, 2, 3, 4], torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(p[1, :, 1, 1, 1], torch.full((3,), 0.5))
    cos = torch.cosine_similarity(voxels[0, :, 1, 2, 3][None], anchors, dim=1)  # (K,)
    assert torch.allclose(p[0, :, 1, 2, 3], (cos + 1) / 2, atol=1e-6)
    assert torch.equal(zero_shot_segment(voxels, anchors), p)
    assert torch.equal(zero_shot_segment(voxels, anchors, threshold=0.5), p > 0.5)
    with pytest.raises(ValueError):
        anchor_probabilities(voxels, torch.randn(3, 5))


def test_prompts_anchor_head_and_encode_anchors():
    assert anchor_prompts(["lung", "pleural_effusion", " heart "]) == [
        "This is lung.", "This is pleural effusion.", "This is heart."]
    with pytest.raises(ValueError):
        anchor_prompts(["lung", "  "])
    head = AnchorHead(text_dim=10, embed_dim=4, hidden=7)
    kinds = [type(m) for m in head.net]
    assert kinds == [nn.Linear, nn.LeakyReLU, nn.LayerNorm, nn.Linear]

    class TextModel:  # the two attributes VisionLanguageModel.encode_anchors reads
        seen: list[str] = []
        seg = {"anchor": head}

        def encode_texts(self, texts):
            self.seen.extend(texts)
            return torch.randn(len(texts), 10)

    model = TextModel()
    assert VisionLanguageModel.encode_anchors(model, ["lung", "heart"]).shape == (2, 4)
    assert model.seen == ["This is lung.", "This is heart."]


def test_resize_masks():
    masks = torch.zeros(1, 2, 2, 2, 2, dtype=torch.bool)
    masks[0, 0, 0, 0, 0] = True
    up = resize_masks(masks, (4, 4, 4))
    assert up.dtype == torch.float32 and up.shape == (1, 2, 4, 4, 4)
    assert up[0, 0, :2, :2, :2].eq(1).all() and up.sum() == 8
    down = resize_masks(up.to(torch.uint8), (1, 1, 1), mode="area")
    assert torch.allclose(down.flatten(), torch.tensor([8 / 64, 0.0]))
    assert torch.equal(resize_masks(masks, (2, 2, 2)), masks.float())
    with pytest.raises(ValueError):
        resize_masks(masks, (2, 2, 2, 2))
    with pytest.raises(ValueError):
        resize_masks(masks, (4, 4, 4), mode="linear")


def test_segmentation_outputs_and_slice_mask():
    torch.manual_seed(0)
    voxels, anchors = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4)
    masks = torch.rand(2, 2, 3, 2, 2) > 0.5
    out = segmentation_outputs(voxels, anchors, masks)
    assert set(out) == {"seg_probs", "seg_targets", "seg_available"}
    assert out["seg_available"].all() and out["seg_targets"].dtype == out["seg_probs"].dtype
    slice_mask = torch.tensor([[True, True, False], [True, False, True]])
    kept = segmentation_outputs(voxels, anchors, masks, torch.tensor([[True, False], [True, True]]), slice_mask)
    assert kept["seg_probs"][0, :, 2].eq(0).all() and kept["seg_targets"][1, :, 1].eq(0).all()
    assert torch.equal(kept["seg_probs"][0, :, :2], out["seg_probs"][0, :, :2])
    assert TverskyLoss()(**kept).isfinite()
    with pytest.raises(ValueError):
        segmentation_outputs(voxels, anchors, masks[:, :, :2])


def test_visual_enhancement_identity_at_init_and_lambda_gradient():
    torch.manual_seed(0)
    ve = VisualEnhancement(embed_dim=4, image_dim=6)
    z_img, voxels = torch.randn(2, 6), torch.randn(2, 4, 3, 2, 2)
    z = ve(z_img, voxels)
    assert torch.equal(z, z_img)
    (z * torch.randn(2, 6)).sum().backward()
    assert ve.scale.grad is not None and ve.scale.grad.abs() > 0
    with torch.no_grad():
        ve.scale.fill_(1.0)
        assert torch.allclose(ve(z_img, voxels), z_img + ve.f_ve(voxels.mean(dim=(2, 3, 4))))
        # AvgPool(f_VE(V)) == f_VE(AvgPool(V)) (the Linear is affine).
        per_voxel = ve.f_ve(voxels.flatten(2).transpose(1, 2)).mean(dim=1)  # (B, d_img)
        assert torch.allclose(ve.pooled(voxels), per_voxel, atol=1e-6)
        slice_mask = torch.tensor([[True, True, False], [True, True, True]])
        expected = ve.f_ve(torch.stack([voxels[0, :, :2].mean(dim=(1, 2, 3)), voxels[1].mean(dim=(1, 2, 3))]))
        assert torch.allclose(ve.pooled(voxels, slice_mask), expected, atol=1e-6)


def test_a_few_steps_fit_a_blob():
    torch.manual_seed(0)
    d, h, w = 8, 16, 16
    z, y, x = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    blob = ((z - 3.5) / 3) ** 2 + ((y - 6) / 4) ** 2 + ((x - 9) / 5) ** 2 <= 1  # (D, H, W)
    image = torch.where(blob, 0.6, -0.8)[None, None] + 0.05 * torch.randn(1, 1, d, h, w)
    tower = VisionTransformer3d(vit_config("debug", width=24, depth=1, heads=2, patch=(4, 8, 8))).eval()
    with torch.no_grad():
        out = tower(image[:, :, :7])  # depth 7: the ViT pads to 8, the head crops back to 7
    masks = torch.stack([blob, ~blob])[None, :, :7]  # (1, K = 2, 7, H, W)
    head = VoxelHead.for_tower(VoxelHeadConfig(embed_dim=8, hidden=32, patch=(4, 8, 8)), tower)
    anchors = nn.Parameter(torch.randn(2, 8))
    loss_fn = TverskyLoss(alpha=torch.tensor([0.3, 0.5]), beta=torch.tensor([0.7, 0.5]))
    opt = torch.optim.Adam([*head.parameters(), anchors], lr=3e-2)
    losses = []
    for _ in range(25):
        voxels = head(out["tokens"], out["grid"], size=(7, h, w))  # (1, 8, 7, 16, 16)
        loss = loss_fn(**segmentation_outputs(voxels, anchors, masks))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 0.4 and losses[-1] < 0.2 * losses[0], losses  # 0.54 -> 0.06
