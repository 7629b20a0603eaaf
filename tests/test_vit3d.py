"""3D ViT: contract over every named size, z-translation equivariance with RoPE, padding masks,
learned positions, attention vs a plain reference, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ctvlp.models.layers import Attention, DropPath, PatchEmbed3d
from ctvlp.models.rope import apply_rope, rope_angles
from ctvlp.models.vit3d import SIZES, ViT3dConfig, create_vision_tower, list_sizes, vit_config


def model(name: str = "debug", **overrides):
    torch.manual_seed(0)
    return create_vision_tower(vit_config(name, **overrides)).eval()


def volume(depth: int, h: int = 32, w: int = 32, batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, depth, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def grads(net, x, weights, slice_mask=None):
    net.zero_grad()
    (net(x, slice_mask)["tokens"] * weights).sum().backward()  # a random read-out: LayerNorm outputs sum to ~0
    return {n: p.grad.clone() for n, p in net.named_parameters()}


@pytest.mark.parametrize("name", list_sizes())
def test_contract(name):
    """Forward, backward, a finite non-zero gradient on every parameter, and grad checkpointing changes
    nothing (outputs and gradients, eval mode). Big sizes run 2 blocks at their own width/heads/patch."""
    net = model(name, depth=2)
    pz, py, px = net.cfg.patch
    x = volume(2 * pz - 3, py, 2 * px, batch=2)  # D not a multiple of pz: internal repeat padding
    out = net(x)
    assert out["tokens"].shape == (2, 4, net.width) and out["grid"] == (2, 1, 2)
    assert out["pooled"].shape == (2, net.width) and out["token_mask"].all()
    weights = torch.randn(out["tokens"].shape, generator=torch.Generator().manual_seed(1))
    net.train()
    torch.manual_seed(0)
    train_grads = grads(net, x, weights)
    for n, g in train_grads.items():
        assert torch.isfinite(g).all() and g.abs().sum() > 0, n
    net.eval()
    plain = grads(net, x, weights)
    net.set_grad_checkpointing(True)
    with torch.enable_grad():
        out_ckpt = net(x)
    ckpt = grads(net, x, weights)
    torch.testing.assert_close(out_ckpt["tokens"], out["tokens"])
    for n in plain:
        torch.testing.assert_close(ckpt[n], plain[n], msg=n)


def test_grad_checkpointing_recomputes_blocks():
    """With checkpointing a block's attention runs again in the backward pass; without, and under no_grad, once."""
    net = model()
    calls = []
    net.blocks[0].attn.register_forward_hook(lambda *_: calls.append(1))  # the block hook: recompute stops early
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


def test_sizes():
    assert list_sizes() == ["debug", "small", "base", "large", "primus-m"]
    assert {n: (SIZES[n]["width"], SIZES[n]["depth"], SIZES[n]["heads"]) for n in ("small", "base", "large")} == {
        "small": (396, 12, 6), "base": (792, 12, 12), "large": (1056, 24, 16)}
    primus = vit_config("primus-m")
    assert (primus.width, primus.depth, primus.heads, primus.patch, primus.mlp) == (864, 16, 12, (8, 8, 8), "swiglu")
    assert math.isclose(primus.mlp_ratio, 8 / 3) and primus.layerscale == 0.1 and primus.drop_path == 0.2
    assert ViT3dConfig() == vit_config("debug")
    assert ViT3dConfig(patch=[8, 16, 16], learned_grid=[2, 3, 4]).learned_grid == (2, 3, 4)  # from YAML lists
    net = create_vision_tower(vit_config("primus-m", depth=2))
    assert net.blocks[0].mlp.fc12.out_features == 2 * 2304
    assert net.rope.split == (24, 24, 24) and net.rope.base == 10000.0  # all 72 dims, as timm's RotaryEmbeddingCat
    assert [b.drop_path.p for b in net.blocks] == [0.0, 0.2]


def test_primus_m_blocks_are_eva_blocks():
    """Primus-M's blocks (timm Eva): sub-LayerNorms before the attention and SwiGLU output projections, q and v
    biases without a key bias, and Eva's init (output weights of block i scaled by 1 / sqrt(2 (i + 1)))."""
    torch.manual_seed(0)
    net = create_vision_tower(vit_config("primus-m", depth=2))
    attn, mlp = net.blocks[1].attn, net.blocks[1].mlp
    assert isinstance(attn.norm, torch.nn.LayerNorm) and attn.norm.normalized_shape == (864,)
    assert isinstance(mlp.norm, torch.nn.LayerNorm) and mlp.norm.normalized_shape == (2304,)
    assert attn.qkv.bias is None and attn.q_bias.shape == attn.v_bias.shape == (864,)
    for i, block in enumerate(net.blocks):
        expected = 0.02 / math.sqrt(2 * (i + 1))  # trunc-normal std 0.02 (cut at +-2: no cut in effect)
        for weight in (block.attn.proj.weight, block.mlp.fc3.weight):
            assert weight.std().item() == pytest.approx(expected, rel=0.03)
    he_std = math.sqrt(2 / (1 + 0.01 ** 2) / 8 ** 3)  # kaiming normal, negative slope 0.01, fan_in 512
    assert net.patch_embed.proj.weight.std().item() == pytest.approx(he_std, rel=0.03)
    assert not net.patch_embed.proj.bias.any()
    plain = create_vision_tower(vit_config("debug"))
    assert isinstance(plain.blocks[0].attn.norm, torch.nn.Identity) and plain.blocks[0].attn.qkv.bias is not None
    x = torch.randn(2, 5, 864)
    with torch.no_grad():
        attn.q_bias.normal_(), attn.v_bias.normal_()
    bias = torch.cat((attn.q_bias, torch.zeros(864), attn.v_bias))
    q, k, v = torch.nn.functional.linear(x, attn.qkv.weight, bias).chunk(3, dim=-1)
    torch.testing.assert_close(attn._qkv(x), torch.cat((q, k, v), dim=-1))
    assert torch.equal(k, x @ attn.qkv.weight[864:1728].T)  # the keys have no bias


def test_rope_encoder_is_translation_equivariant_in_z():
    """A 2-patch chunk encoded alone equals the same chunk placed at z-patches 3-4 of a 6-patch volume whose
    other slices are masked out, and equals the chunk encoded with z_offset 5; learned positions differ."""
    net = model()
    chunk = volume(16)
    alone = net(chunk)["tokens"]  # (1, 2 * 2 * 2, C)
    noise = volume(48, seed=1)
    noise[:, :, 24:40] = chunk
    mask = torch.zeros(1, 48, dtype=torch.bool)
    mask[:, 24:40] = True
    placed = net(noise, mask)
    assert placed["token_mask"].view(6, 4)[:, 0].tolist() == [False, False, False, True, True, False]
    torch.testing.assert_close(placed["tokens"][placed["token_mask"]], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(placed["pooled"], net(chunk)["pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(net(chunk, z_offset=5)["tokens"], alone, atol=1e-5, rtol=1e-5)
    learned = model(pos="learned", learned_grid=(8, 2, 2))
    assert not torch.allclose(learned(chunk, z_offset=5)["tokens"], learned(chunk)["tokens"], atol=1e-3)


@pytest.mark.parametrize("short,pad_fill", [(16, "air"), (13, "repeat")])
def test_padding_mask_matches_running_alone(short, pad_fill):
    """A short volume batched with a longer one (padded at the end, slices masked) gives its own tokens and
    pooled vector. 13 slices: the batch pads with the last slice, as the model does internally alone."""
    net = model()
    a, b = volume(short, seed=2), volume(40, seed=3)
    fill = a[:, :, -1:] if pad_fill == "repeat" else torch.full_like(a[:, :, -1:], -1.0)
    padded = torch.cat([a, fill.expand(-1, -1, 40 - short, -1, -1)], dim=2)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[0, :short], mask[1] = True, True
    batch = net(torch.cat([padded, b]), mask)
    alone, long = net(a), net(b)
    n = alone["tokens"].shape[1]
    assert batch["token_mask"][0].sum() == n and batch["token_mask"][1].all()
    torch.testing.assert_close(batch["tokens"][0, :n], alone["tokens"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch["pooled"][0], alone["pooled"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch["tokens"][1], long["tokens"][0], atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batch["tokens"]).all()


def test_attention_mask_only_when_padding(monkeypatch):
    """No padding in the batch -> attn_mask None (fast kernels); padding -> a (B, 1, 1, N) bool key mask."""
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append(None if attn_mask is None else (attn_mask.dtype, tuple(attn_mask.shape)))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    net = model()
    x = volume(20, batch=2)
    net(x)
    net(x, torch.ones(2, 20, dtype=torch.bool))
    assert seen == [None] * 4
    seen.clear()
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[1, 8:] = False
    assert net(x, mask)["token_mask"].sum(dim=1).tolist() == [12, 4]
    assert seen == [(torch.bool, (2, 1, 1, 12))] * 2


def test_token_mask_any_real_slice():
    """A z-patch is valid when any of its slices is real (repeat padding interleaves copies)."""
    net = model()
    mask = torch.zeros(1, 24, dtype=torch.bool)
    mask[0, 9] = True
    mask[0, 23] = True
    assert net(volume(24), mask)["token_mask"].view(3, 4)[:, 0].tolist() == [False, True, True]


def test_attention_matches_plain_reference():
    """SDPA with RoPE and a key mask vs softmax(q k^T / sqrt(d) masked to -inf) v written out."""
    torch.manual_seed(5)
    attn = Attention(24, heads=2)
    x = torch.randn(2, 12, 24)
    rope = rope_angles((3, 2, 2), 12)
    key_mask = torch.ones(2, 12, dtype=torch.bool)
    key_mask[0, 8:] = False
    q, k, v = attn.qkv(x).view(2, 12, 3, 2, 12).permute(2, 0, 3, 1, 4)
    q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(12)
    logits = logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(2, 12, 24))
    torch.testing.assert_close(attn(x, rope, key_mask), expected, atol=1e-5, rtol=1e-5)


def test_learned_positions():
    net = model(pos="learned", learned_grid=(4, 3, 3))
    assert net.no_weight_decay() == {"pos_embed"} and model().no_weight_decay() == set()
    out = net(volume(16, 32, 48))  # grid (2, 2, 3) inside (4, 3, 3)
    assert out["grid"] == (2, 2, 3) and torch.isfinite(out["tokens"]).all()
    net(volume(16), z_offset=2)  # z-patches 2..3: still inside
    with pytest.raises(ValueError, match="learned_grid"):
        net(volume(40))  # 5 z-patches > 4
    with pytest.raises(ValueError, match="learned_grid"):
        net(volume(8, 64, 32))  # 4 y-patches > 3
    with pytest.raises(ValueError, match="learned_grid"):
        net(volume(16), z_offset=3)


def test_pos_none_and_conv_stem():
    x = volume(16)
    for net in (model(pos="none"), model(stem="conv"), model(stem="conv", patch=(4, 8, 8))):
        out = net(x)
        gz, gy, gx = (16 // net.cfg.patch[0], 32 // net.cfg.patch[1], 32 // net.cfg.patch[2])
        assert out["grid"] == (gz, gy, gx) and out["tokens"].shape == (1, gz * gy * gx, net.width)
    stem = PatchEmbed3d((4, 8, 8), 1, 16, stem="conv", stem_width=8)
    assert stem(x).shape == (1, 16, 4, 4, 4)


def test_drop_path():
    drop = DropPath(0.5)
    x = torch.ones(4000, 3, 2)
    assert drop.eval()(x) is x
    torch.manual_seed(0)
    y = drop.train()(x)
    per_sample = y[:, 0, 0]
    assert set(per_sample.unique().tolist()) == {0.0, 2.0} and (y == per_sample[:, None, None]).all()
    assert abs(float(per_sample.mean()) - 1.0) < 0.06


def test_bad_inputs():
    net = model()
    with pytest.raises(ValueError, match="expected x"):
        net(torch.zeros(1, 16, 32, 32))
    with pytest.raises(ValueError, match="expected x"):
        net(torch.zeros(1, 2, 16, 32, 32))
    with pytest.raises(ValueError, match="not divisible"):
        net(torch.zeros(1, 1, 16, 32, 40))
    with pytest.raises(ValueError, match="slice_mask must be"):
        net(torch.zeros(1, 1, 16, 32, 32), torch.ones(1, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match="no real slice"):
        net(torch.zeros(2, 1, 16, 32, 32), torch.tensor([[True] * 16, [False] * 16]))


@pytest.mark.parametrize("overrides,match", [
    (dict(width=50), "divisible"), (dict(mlp="relu"), "mlp"), (dict(pos="sincos"), "pos"),
    (dict(pos="learned"), "learned_grid"), (dict(stem="conv", patch=(3, 16, 16)), "stem"),
    (dict(patch=(0, 16, 16)), "patch"), (dict(drop_path=1.0), "drop_path"), (dict(depth=0), "positive"),
    (dict(width=12, heads=6), "needs >= 6"), (dict(rope_base=1.0), "rope_base"), (dict(colour=1), "unknown"),
])
def test_bad_configs(overrides, match):
    with pytest.raises(ValueError, match=match):
        vit_config("debug", **overrides)
    with pytest.raises(ValueError, match="unknown ViT size"):
        vit_config("huge")
