"""MAE on the 3D ViT: ``forward_visible`` against ``forward_features`` (all tokens) and against full
attention restricted to the kept tokens (a subset), the decoder's unshuffle, and the MAE step
(shapes, loss goes down, gradients reach both towers, visible patches do not count)."""

from __future__ import annotations

import pytest
import torch

from ctvlp.losses.mae import MaeLoss, mae_loss
from ctvlp.models.mae import MaeDecoder, MaeDecoderConfig, masked_autoencoder_step, random_masking
from ctvlp.models.vit3d import VisionTransformer3d, vit_config

POS = {"rope": {}, "learned": {"learned_grid": (4, 2, 3)}, "none": {}}


pytestmark = pytest.mark.usefixtures("one_thread")


def tower(pos: str = "rope", **overrides) -> VisionTransformer3d:
    torch.manual_seed(0)
    cfg = vit_config("debug", width=24, depth=2, heads=2, patch=(2, 4, 4), pos=pos, **{**POS[pos], **overrides})
    return VisionTransformer3d(cfg).eval()


def volume(batch: int = 2, depth: int = 6, h: int = 8, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, depth, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def smooth_volume(batch: int = 2, depth: int = 6, h: int = 8, w: int = 12) -> torch.Tensor:
    """Plane waves (a different direction per sample): masked patches are predictable from visible ones."""
    z, y, x = torch.meshgrid(torch.arange(depth), torch.arange(h), torch.arange(w), indexing="ij")
    waves = [torch.sin(0.5 * z + 0.3 * (i + 1) * y + 0.2 * x) for i in range(batch)]
    return torch.stack(waves)[:, None].float()  # (B, 1, D, H, W)


def keep_mask(keep_idx: torch.Tensor, n: int) -> torch.Tensor:
    return torch.zeros(keep_idx.shape[0], n, dtype=torch.bool).scatter(1, keep_idx, True)  # (B, N)


@pytest.mark.parametrize("pos", list(POS))
@pytest.mark.parametrize("stem", ["none", "conv"])
def test_visible_all_tokens_is_forward_features(pos, stem):
    """keep_idx = every token (and a depth needing repeat padding): the same tokens as forward_features."""
    net, x = tower(pos, stem=stem, stem_width=4), volume(depth=5)  # grid (3, 2, 3), N = 18
    tokens, _, grid = net.forward_features(x)
    keep_idx = torch.arange(18).expand(2, -1)
    out = net.forward_visible(x, keep_idx)
    assert out["grid"] == grid == (3, 2, 3) and out["tokens"].shape == (2, 18, 24)
    assert torch.equal(out["keep_idx"], keep_idx) and bool(out["token_mask"].all())
    torch.testing.assert_close(out["tokens"], tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pos", list(POS))
def test_visible_subset_is_full_attention_restricted_to_kept(pos, monkeypatch):
    """Reference: forward_features over the whole grid with every non-kept token removed from the keys.

    Everything but attention is per token, and attention whose only keys are the kept tokens is
    attention among the kept tokens; forward_features indexes its full (N, r) RoPE tables and its learned
    embedding rows by position, so the kept tokens' outputs agree only if forward_visible gave each kept
    token its own rotation / embedding. The key mask enters through ``_token_mask`` (patched). Learned
    positions also check a z_offset crop."""
    net, x = tower(pos), volume(depth=6)  # grid (3, 2, 3), N = 18
    z_offset = 1 if pos == "learned" else 0
    keep_idx, _ = random_masking(2, 18, 0.75, torch.Generator().manual_seed(1))  # (2, 4)
    assert keep_idx.shape == (2, 4)
    out = net.forward_visible(x, keep_idx, z_offset=z_offset)
    monkeypatch.setattr(net, "_token_mask", lambda slice_mask, grid: keep_mask(keep_idx, 18))
    tokens, _, _ = net.forward_features(x, z_offset=z_offset)
    ref = tokens.gather(1, keep_idx[..., None].expand(-1, -1, 24))  # (2, 4, 24)
    torch.testing.assert_close(out["tokens"], ref, rtol=1e-5, atol=1e-5)


def test_visible_padding_slices_are_not_keys(monkeypatch):
    """With a slice_mask, kept padding tokens are not attended to: reference keys = kept & valid."""
    net, x = tower("rope"), volume(depth=6)
    slice_mask = torch.ones(2, 6, dtype=torch.bool)
    slice_mask[1, 2:] = False  # sample 1: only the first z-patch (6 tokens) is real
    keep_idx = torch.tensor([[0, 5, 7, 12, 17], [1, 3, 6, 11, 16]])
    out = net.forward_visible(x, keep_idx, slice_mask)
    assert out["token_mask"].tolist() == [[True] * 5, [True, True, False, False, False]]
    valid = torch.ones(2, 18, dtype=torch.bool)
    valid[1, 6:] = False
    monkeypatch.setattr(net, "_token_mask", lambda slice_mask, grid: keep_mask(keep_idx, 18) & valid)
    ref = net.forward_features(x, slice_mask)[0].gather(1, keep_idx[..., None].expand(-1, -1, 24))
    torch.testing.assert_close(out["tokens"][out["token_mask"]], ref[out["token_mask"]], rtol=1e-5, atol=1e-5)


def test_visible_checkpointing_and_bad_inputs():
    net, x = tower("rope"), volume()
    keep_idx = torch.tensor([[0, 4, 9], [2, 3, 17]])
    plain = net.forward_visible(x, keep_idx)["tokens"]
    net.set_grad_checkpointing(True)
    torch.testing.assert_close(net.forward_visible(x, keep_idx)["tokens"], plain)
    for bad in (torch.tensor([[0, 18, 1], [0, 1, 2]]), torch.tensor([[-1, 0, 1], [0, 1, 2]]),
                torch.zeros(3, 2, dtype=torch.long), torch.zeros(2, 2), torch.zeros(2, 0, dtype=torch.long)):
        with pytest.raises(ValueError):
            net.forward_visible(x, bad)
    slice_mask = torch.ones(2, 6, dtype=torch.bool)
    slice_mask[1, 2:] = False
    with pytest.raises(ValueError, match="only padding"):
        net.forward_visible(x, torch.tensor([[0, 1], [12, 13]]), slice_mask)


def test_decoder_config_validation():
    for bad in (dict(width=0), dict(width=30, heads=4), dict(width=8, heads=2), dict(rope_base=1.0),
                dict(mlp_ratio=0.0)):
        with pytest.raises(ValueError):
            MaeDecoderConfig(**bad)


def test_decoder_unshuffles_visible_tokens():
    """The first decoder block sees embed(visible token) at its own index and the mask token elsewhere."""
    torch.manual_seed(0)
    dec = MaeDecoder(MaeDecoderConfig(width=16, depth=1, heads=2), encoder_width=24, patch=(2, 4, 4))
    seen = {}
    dec.blocks[0].register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    tokens, keep_idx = torch.randn(2, 3, 24), torch.tensor([[0, 4, 9], [2, 3, 17]])
    pred = dec(tokens, keep_idx, (3, 2, 3))
    assert pred.shape == (2, 18, 2 * 4 * 4)
    x, embedded = seen["x"], dec.embed(tokens)
    for i in range(2):
        visible = keep_mask(keep_idx, 18)[i]
        torch.testing.assert_close(x[i, keep_idx[i]], embedded[i])
        torch.testing.assert_close(x[i, ~visible], dec.mask_token[0].expand(int((~visible).sum()), -1))


def mae_pair(pos: str = "rope"):
    net = tower(pos).train()
    torch.manual_seed(1)
    return net, MaeDecoder.for_tower(MaeDecoderConfig(width=16, depth=1, heads=2), net)


def test_step_shapes_and_mask():
    net, dec = mae_pair()
    out = masked_autoencoder_step(net, dec, volume(depth=5), generator=torch.Generator().manual_seed(0))
    assert set(out) == {"mae_pred", "mae_target", "mae_mask"}
    assert out["mae_pred"].shape == out["mae_target"].shape == (2, 18, 32)
    assert out["mae_mask"].shape == (2, 18) and out["mae_mask"].sum(1).tolist() == [14, 14]  # keep int(18/4) = 4
    assert torch.isfinite(MaeLoss()(**out))
    again = masked_autoencoder_step(net, dec, volume(depth=5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["mae_mask"], out["mae_mask"])  # the generator fixes the masking
    slice_mask = torch.ones(2, 5, dtype=torch.bool)
    slice_mask[1, 2:] = False  # sample 1: z-patches 1 and 2 are padding -> never loss terms
    padded = masked_autoencoder_step(net, dec, volume(depth=5), generator=torch.Generator().manual_seed(5),
                                     slice_mask=slice_mask)
    assert not bool(padded["mae_mask"][1, 6:].any()) and bool(padded["mae_mask"][1, :6].any())


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_gradients_reach_encoder_and_decoder(pos):
    net, dec = mae_pair(pos)
    MaeLoss()(**masked_autoencoder_step(net, dec, volume(), generator=torch.Generator().manual_seed(0))).backward()
    for name, p in [*net.named_parameters(prefix="enc"), *dec.named_parameters(prefix="dec")]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_visible_predictions_do_not_affect_loss():
    net, dec = mae_pair()
    out = masked_autoencoder_step(net, dec, volume(), generator=torch.Generator().manual_seed(0))
    pred = out["mae_pred"].detach().requires_grad_(True)
    loss = mae_loss(pred, out["mae_target"], out["mae_mask"])
    loss.backward()
    visible = ~out["mae_mask"]
    assert bool(visible.any()) and float(pred.grad[visible].abs().max()) == 0.0
    assert float(pred.grad[out["mae_mask"]].abs().max()) > 0.0
    changed = pred.detach().clone()
    changed[visible] = 1e3
    assert float(mae_loss(changed.detach(), out["mae_target"], out["mae_mask"])) == pytest.approx(loss.item(), rel=1e-6)


def test_loss_decreases_on_a_fixed_batch():
    net, dec = mae_pair()
    x, loss_fn = smooth_volume(), MaeLoss()
    opt = torch.optim.AdamW([*net.parameters(), *dec.parameters()], lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(**masked_autoencoder_step(net, dec, x, generator=torch.Generator().manual_seed(0)))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0] and min(losses[-3:]) < min(losses[:3]), losses
