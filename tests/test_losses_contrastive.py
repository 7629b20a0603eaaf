"""CLIP and SigLIP losses on one process: hand-computed golden numbers, a plain loop reference,
gradients, symmetry, stability and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ctvlp.losses import ClipLoss, SigLipLoss, clip_loss, siglip_loss

# Golden inputs: I = [[1, 0], [0, 1]], T = [[1, 0], [0.6, 0.8]] (both unit rows), t = 2, so
# t I T^T = [[2, 1.2], [0, 1.6]].
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x); with two classes -log softmax = softplus(other - target)."""
    return math.log1p(math.exp(x))


def test_clip_golden():
    # image->text rows: [2, 1.2] target 0 -> log(1 + e^-0.8) = 0.371101;
    #                   [0, 1.6] target 1 -> log(1 + e^-1.6) = 0.183901; mean 0.277501.
    # text->image cols: [2, 0] target 0 -> log(1 + e^-2) = 0.126928;
    #                   [1.2, 1.6] target 1 -> log(1 + e^-0.4) = 0.513015; mean 0.319972.
    # loss = (0.277501 + 0.319972) / 2 = 0.298736.
    expected = ((softplus(-0.8) + softplus(-1.6)) / 2 + (softplus(-2.0) + softplus(-0.4)) / 2) / 2
    assert expected == pytest.approx(0.298736, abs=1e-6)
    assert clip_loss(IMG, TXT, torch.tensor(2.0)).item() == pytest.approx(expected, abs=1e-6)


def test_siglip_golden_with_bias():
    # b = -1: logits = [[1, 0.2], [-1, 0.6]], z = [[1, -1], [-1, 1]], z * logits = [[1, -0.2], [1, 0.6]].
    # -log sigmoid: 0.313262, 0.798139, 0.313262, 0.437488; sum 1.862151, / B = 0.931075.
    expected = (2 * softplus(-1.0) + softplus(0.2) + softplus(-0.6)) / 2
    assert expected == pytest.approx(0.931075, abs=1e-6)
    assert siglip_loss(IMG, TXT, torch.tensor(2.0), torch.tensor(-1.0)).item() == pytest.approx(expected, abs=1e-6)


def clip_reference(img: torch.Tensor, txt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Loops over i, j with an explicit softmax, built from 0-d tensor ops so autograd works."""
    b = img.shape[0]
    s = [[t * sum(img[i, d] * txt[j, d] for d in range(img.shape[1])) for j in range(b)] for i in range(b)]
    i2t = sum(-torch.log(torch.exp(s[i][i]) / sum(torch.exp(s[i][j]) for j in range(b))) for i in range(b))
    t2i = sum(-torch.log(torch.exp(s[j][j]) / sum(torch.exp(s[i][j]) for i in range(b))) for j in range(b))
    return (i2t + t2i) / (2 * b)


def siglip_reference(img: torch.Tensor, txt: torch.Tensor, t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Loops over i, j of -log(1 / (1 + exp(-z_ij * logit_ij))) from 0-d tensor ops."""
    b = img.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            logit = t * sum(img[i, d] * txt[j, d] for d in range(img.shape[1])) + bias
            total = total - torch.log(1.0 / (1.0 + torch.exp(-z * logit)))
    return total / b


def random_batch(b: int = 5, d: int = 4, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    txt = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    return img, txt


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clip_matches_loop_reference(seed):
    img, txt = random_batch(seed=seed)
    t = torch.tensor(7.5, dtype=torch.float64)
    expected = clip_reference(img, txt, t).item()
    assert clip_loss(img.float(), txt.float(), t.float()).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_siglip_matches_loop_reference(seed):
    img, txt = random_batch(seed=seed)
    t, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    expected = siglip_reference(img, txt, t, bias).item()
    assert siglip_loss(img.float(), txt.float(), t.float(), bias.float()).item() == pytest.approx(expected, rel=1e-5)


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [x.detach().clone().requires_grad_() for x in tensors]


def test_clip_gradients_match_reference_autograd():
    img, txt = random_batch(b=4, d=3, seed=3)
    t = torch.tensor(5.0, dtype=torch.float64)
    fast, ref = leaves(img, txt, t), leaves(img, txt, t)
    clip_loss(*fast).backward()
    clip_reference(*ref).backward()
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(clip_loss, leaves(img, txt, t))


def test_siglip_gradients_match_reference_autograd():
    img, txt = random_batch(b=4, d=3, seed=4)
    t, bias = torch.tensor(5.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    fast, ref = leaves(img, txt, t, bias), leaves(img, txt, t, bias)
    siglip_loss(*fast).backward()
    siglip_reference(*ref).backward()
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(siglip_loss, leaves(img, txt, t, bias))


def test_clip_is_symmetric_in_the_two_modalities_and_invariant_to_row_order():
    img, txt = random_batch(b=6, d=5, seed=5, dtype=torch.float32)
    t = torch.tensor(4.0)
    loss = clip_loss(img, txt, t)
    torch.testing.assert_close(clip_loss(txt, img, t), loss)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(clip_loss(img[perm], txt[perm], t), loss)
    # Pairing row i with a different text changes the loss (the targets are the diagonal).
    assert not torch.isclose(clip_loss(img, txt[perm], t), loss)


def test_siglip_is_stable_for_extreme_logits():
    # I = T = [[1, 0], [-1, 0]], t = 100, b = -300: positives have logit -200 (-log sigmoid = 200),
    # negatives logit -400 (z * logit = 400, -log sigmoid ~ e^-400 = 0). Loss = (200 + 200) / 2 = 200.
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    loss = siglip_loss(emb, emb, torch.tensor(100.0), torch.tensor(-300.0))
    assert loss.item() == pytest.approx(200.0)


def test_clip_is_stable_for_large_scale():
    img, txt = random_batch(b=4, d=3, seed=6, dtype=torch.float32)
    loss = clip_loss(img, txt, torch.tensor(1e4))
    assert torch.isfinite(loss)


def test_modules_take_the_model_output_dict():
    img, txt = random_batch(b=3, d=4, seed=7, dtype=torch.float32)
    outputs = {"image_emb": img, "text_emb": txt, "logit_scale": torch.tensor(10.0),
               "logit_bias": torch.tensor(-10.0), "image_tokens": torch.zeros(3, 2, 4)}
    torch.testing.assert_close(ClipLoss()(**outputs), clip_loss(img, txt, torch.tensor(10.0)))
    torch.testing.assert_close(SigLipLoss()(**outputs), siglip_loss(img, txt, torch.tensor(10.0), torch.tensor(-10.0)))


BAD_PAIRS = {
    "1-D image": (torch.zeros(4), torch.zeros(4, 3)),
    "3-D text": (torch.zeros(4, 3), torch.zeros(4, 3, 1)),
    "different B": (torch.zeros(4, 3), torch.zeros(5, 3)),
    "different D": (torch.zeros(4, 3), torch.zeros(4, 2)),
    "empty batch": (torch.zeros(0, 3), torch.zeros(0, 3)),
}


@pytest.mark.parametrize("name", BAD_PAIRS)
def test_bad_embedding_shapes_raise(name):
    img, txt = BAD_PAIRS[name]
    with pytest.raises(ValueError, match="embeddings"):
        clip_loss(img, txt, torch.tensor(1.0))
    with pytest.raises(ValueError, match="embeddings"):
        siglip_loss(img, txt, torch.tensor(1.0), torch.tensor(0.0))
    with pytest.raises(ValueError, match="embeddings"):
        ClipLoss()(image_emb=img, text_emb=txt, logit_scale=torch.tensor(1.0))


def test_non_scalar_scale_or_bias_raises():
    img, txt = random_batch(b=2, d=3, dtype=torch.float32)
    with pytest.raises(ValueError, match="logit_scale"):
        clip_loss(img, txt, torch.ones(2))
    with pytest.raises(ValueError, match="logit_scale"):
        siglip_loss(img, txt, torch.ones(2), torch.tensor(0.0))
    with pytest.raises(ValueError, match="logit_bias"):
        SigLipLoss()(image_emb=img, text_emb=txt, logit_scale=torch.tensor(1.0), logit_bias=torch.zeros(2, 1))
