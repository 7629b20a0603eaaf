"""3D ResNet tower (MONAI): the ViT tower's output contract at every depth, the slice-mask -> token-mask
rule, any input depth, group norm, grad checkpointing, config validation and (de)serialisation next to
a ViT config, and use inside the vision-language model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import monai.networks.nets as monai_nets
import pytest
import torch

from ctvlp.config import ConfigError, apply_overrides, from_dict, to_dict
from ctvlp.losses import SigLipLoss
from ctvlp.models import vlp
from ctvlp.models.resnet3d import ResNet3dConfig, ResNetTower3d, create_resnet_tower, resnet_config
from ctvlp.models.text import TextTowerConfig
from ctvlp.models.vit3d import ViT3dConfig, create_vision_tower, vit_config

TINY = (8, 8, 16, 16)  # stage widths small enough for a fast test


pytestmark = pytest.mark.usefixtures("one_thread")


def tower(depth: int = 10, **overrides) -> ResNetTower3d:
    torch.manual_seed(0)
    return create_resnet_tower(resnet_config(depth, **{"widths": TINY, **overrides}))


def volume(depth: int, h: int = 32, w: int = 32, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, depth, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grads(net, x, weights, slice_mask=None):
    net.zero_grad()
    (net(x, slice_mask)["tokens"] * weights).sum().backward()  # a random read-out: LayerNorm outputs sum to ~0
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_contract(depth):
    """The ViT's keys and shapes, and a finite non-zero gradient on every parameter (train mode)."""
    net = tower(depth)
    x = volume(8, 32, 40)
    out = net(x)
    assert set(out) == {"tokens", "token_mask", "grid", "pooled"}
    gz, gy, gx = out["grid"]
    assert out["grid"] == (1, 1, 2)  # total stride (16, 32, 32), ceil((8, 32, 40) / stride)
    assert out["tokens"].shape == (2, gz * gy * gx, net.width) and net.width == TINY[3] * (4 if depth == 50 else 1)
    assert out["token_mask"].shape == (2, gz * gy * gx) and out["token_mask"].dtype == torch.bool
    assert out["pooled"].shape == (2, net.width) and torch.isfinite(out["tokens"]).all()
    weights = torch.randn(out["tokens"].shape, generator=torch.Generator().manual_seed(1))
    for n, g in grads(net, x, weights).items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, n
    assert net.no_weight_decay() == set()


def test_grad_checkpointing_changes_nothing():
    """Outputs and gradients with and without per-stage recomputation (eval mode)."""
    net = tower(18).eval()
    x = volume(16, 32, 40)
    out = net(x)
    weights = torch.randn(out["tokens"].shape, generator=torch.Generator().manual_seed(1))
    plain = grads(net, x, weights)
    net.set_grad_checkpointing(True)
    with torch.enable_grad():
        torch.testing.assert_close(net(x)["tokens"], out["tokens"])
    ckpt = grads(net, x, weights)
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], msg=n)


@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_same_network_as_monai_factory(depth):
    """The depth table builds MONAI's resnet<depth> (same parameter shapes, minus the fc and our final norm;
    widths 1/8 of MONAI's (64, 128, 256, 512) via its widen_factor to keep the test small)."""
    net = create_resnet_tower(resnet_config(depth, widths=(8, 16, 32, 64), final_norm=False))
    ref = getattr(monai_nets, f"resnet{depth}")(n_input_channels=1, feed_forward=False, conv1_t_stride=(1, 2, 2),
                                                widen_factor=1 / 8)
    assert sorted(p.shape for p in net.parameters()) == sorted(p.shape for p in ref.parameters())
    assert net.width == (512 if depth == 50 else 128) // 2
    assert resnet_config(depth).width == (2048 if depth == 50 else 512)


def test_tokens_are_the_feature_map_z_major():
    """tokens[:, n] is the feature map at (z, y, x) = unravel(n, grid): shift the input's content along z
    by one stride and the token rows shift by one."""
    net = tower(stem_stride=(1, 1, 1), max_pool=False, final_norm=False).eval()  # stride 8, no norm on top
    x = volume(16, 16, 24)
    with torch.no_grad():
        feats = net.stages[3](net.stages[2](net.stages[1](net.stages[0](net.stem(x)))))
        out = net(x)
    assert out["grid"] == tuple(feats.shape[2:]) == (2, 2, 3)
    torch.testing.assert_close(out["tokens"], feats.permute(0, 2, 3, 4, 1).reshape(2, 12, -1))


def test_token_mask_from_padded_slices():
    """Token row z covers slices [z * sz, (z + 1) * sz); it is valid if one of them is real. Pooled is the
    mean over valid tokens only."""
    net = tower(stem_stride=(1, 2, 2), max_pool=False).eval()  # z stride 8
    d = 21  # grid z = ceil(21 / 8) = 3, rows cover slices 0-7, 8-15, 16-20
    mask = torch.zeros(3, d, dtype=torch.bool)
    mask[0] = True  # all real
    mask[1, :8] = True  # rows 1, 2 padding
    mask[2, :9] = True  # one real slice in row 1
    out = net(volume(d, batch=3), mask)
    gz, gy, gx = out["grid"]
    assert gz == 3
    rows = out["token_mask"].view(3, gz, gy * gx)
    assert (rows == rows[:, :, :1]).all()  # whole z rows
    assert rows[:, :, 0].tolist() == [[True, True, True], [True, False, False], [True, True, False]]
    valid = out["token_mask"][1]
    torch.testing.assert_close(out["pooled"][1], out["tokens"][1, valid].mean(0))
    assert net(volume(d, batch=3))["token_mask"].all()
    with pytest.raises(ValueError, match="no real slice"):
        net(volume(d, batch=1), torch.zeros(1, d, dtype=torch.bool))
    with pytest.raises(ValueError, match="slice_mask must be"):
        net(volume(d), torch.ones(2, d - 1, dtype=torch.bool))


@pytest.mark.parametrize("d", [1, 7, 17])
def test_any_depth(d):
    """Any D works (one slice included), any H, W too: the grid is ceil(size / stride)."""
    net = tower()
    out = net(volume(d, 20, 36))  # train mode: BatchNorm needs > 1 value per channel, so batch 2
    sz, sy, sx = net.cfg.stride
    assert out["grid"] == (math.ceil(d / sz), math.ceil(20 / sy), math.ceil(36 / sx))
    out["pooled"].sum().backward()
    assert torch.isfinite(net.stem[0].weight.grad).all()


def test_group_norm_is_per_sample():
    """norm='group' leaves no BatchNorm, and a sample's output does not depend on the rest of the batch
    (in train mode too)."""
    net = tower(norm="group", stem_stride=(1, 2, 2), max_pool=False)  # a (2, 2, 2) map: no near-constant group
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)} == {4, 8}  # C/2 for C 8, 16
    x = volume(16)
    torch.testing.assert_close(net(x)["tokens"][:1], net(x[:1])["tokens"])
    net(x)["pooled"].square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_grad_checkpointing_recomputes_stages():
    net = tower()
    calls = []
    net.stages[1][0].conv1.register_forward_hook(lambda *_: calls.append(1))  # a stage hook: recompute stops early
    x = volume(16)
    for enable, expected in ((False, 1), (True, 2)):
        calls.clear()
        net.set_grad_checkpointing(enable)
        net(x)["tokens"].square().sum().backward()
        assert len(calls) == expected
    calls.clear()
    with torch.no_grad():
        net(x)
    assert len(calls) == 1


def test_config_validation():
    for bad, match in ((dict(depth=101), "depth must be one of"), (dict(in_chans=0), "in_chans"),
                       (dict(widths=(8, 8, 8)), "widths"), (dict(widths=(8, 8, 0, 8)), "widths"),
                       (dict(stem_kernel=(4, 7, 7)), "stem_kernel must be odd"),
                       (dict(stem_stride=(0, 2, 2)), "stem_stride"), (dict(norm="layer"), "norm"),
                       (dict(kind="vit"), "kind")):
        with pytest.raises(ValueError, match=match):
            ResNet3dConfig(**bad)
    cfg = ResNet3dConfig(stem_kernel=3, stem_stride=[1, 2, 2], widths=[4, 8, 16, 32])
    assert cfg.stem_kernel == (3, 3, 3) and cfg.stem_stride == (1, 2, 2) and cfg.widths == (4, 8, 16, 32)
    assert cfg.stride == (16, 32, 32) and ResNet3dConfig(max_pool=False, stem_stride=1).stride == (8, 8, 8)
    net = tower()
    with pytest.raises(ValueError, match="expected x"):
        net(torch.zeros(2, 3, 8, 16, 16))


@dataclass
class Holder:
    """A stand-in for ModelConfig with the proposed union field."""

    vision: ViT3dConfig | ResNet3dConfig = field(default_factory=ViT3dConfig)


def test_config_union_round_trip_and_override():
    """A ViT and a ResNet config survive to_dict/from_dict in one union field (the ResNet's ``kind`` key is
    unknown to ViT3dConfig, so from_dict falls through to ResNet3dConfig), and one --set swaps towers."""
    for vision in (vit_config("debug", patch=(4, 8, 8)), resnet_config(34, widths=TINY, stem_stride=(1, 1, 1))):
        data = to_dict(Holder(vision))
        back = from_dict(Holder, data)
        assert type(back.vision) is type(vision) and back.vision == vision
    assert to_dict(Holder(resnet_config()))["vision"]["kind"] == "resnet"
    swapped = apply_overrides(Holder(), ["vision={kind: resnet, depth: 10}"])
    assert swapped.vision == resnet_config(10)
    tuned = apply_overrides(Holder(resnet_config()), ["vision.depth=50", "vision.norm=group"])
    assert tuned.vision == resnet_config(50, norm="group")
    with pytest.raises(ConfigError):
        apply_overrides(Holder(resnet_config()), ["vision.depth=51"])


def test_inside_the_vision_language_model(monkeypatch):
    """VisionLanguageModel takes the ResNet tower through create_vision_tower (patched here the way the
    lead's dispatch would do it): embeddings, max pooling over valid tokens, and the loss backward."""
    monkeypatch.setattr(vlp, "create_vision_tower", lambda cfg: create_resnet_tower(cfg)
                        if isinstance(cfg, ResNet3dConfig) else create_vision_tower(cfg))
    torch.manual_seed(0)
    cfg = vlp.ModelConfig(vision=resnet_config(10, widths=TINY, max_pool=False), embed_dim=16, image_pool="max",
                          text=TextTowerConfig(name="tiny", freeze="all"))
    model = vlp.VisionLanguageModel(cfg)
    assert isinstance(model.vision, ResNetTower3d) and model.vision.width == TINY[3]
    mask = torch.ones(2, 16, dtype=torch.bool)
    mask[1, 8:] = False
    tokens = model.tokenize(["No pleural effusion.", "Cardiomegaly."])
    out = model(image=volume(16), slice_mask=mask, **tokens)
    assert out["image_emb"].shape == (2, 16)
    SigLipLoss(gather=False)(**out).backward()
    assert all(p.grad is not None for p in model.vision.parameters())
