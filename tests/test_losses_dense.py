"""Tversky and masked BCE losses: hand-computed golden numbers, agreement with MONAI's TverskyLoss and
torch's BCE on the available subset, gradients (gradcheck, exactly zero for dropped entries) and input
checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import TverskyLoss as MonaiTverskyLoss

from ctvlp.losses.masked_bce import MaskedBCELoss, masked_bce_loss
from ctvlp.losses.tversky import TverskyLoss, tversky_loss

# ---------------------------------------------------------------------------------------------------
# Tversky

# Golden input: B = 1, C = 2, four voxels.
# class 0: y = [1, 1, 0, 0], P = [0.9, 0.6, 0.2, 0.0] -> TP = 1.5, FP = 0.2, FN = 0.1 + 0.4 = 0.5
# class 1: y = [0, 0, 1, 1], P = [0.5, 0.0, 0.0, 1.0] -> TP = 1.0, FP = 0.5, FN = 1.0
GOLD_P = torch.tensor([[[0.9, 0.6, 0.2, 0.0], [0.5, 0.0, 0.0, 1.0]]], dtype=torch.float64)
GOLD_Y = torch.tensor([[[1, 1, 0, 0], [0, 0, 1, 1]]], dtype=torch.float64)


def test_tversky_golden_scalar_weights():
    # alpha = beta = 0.5: class 0: 1 - 1.5 / (1.5 + 0.1 + 0.25) = 0.35 / 1.85 = 0.189189
    #                     class 1: 1 - 1.0 / (1.0 + 0.25 + 0.5) = 0.75 / 1.75 = 0.428571; mean 0.308880
    assert tversky_loss(GOLD_P, GOLD_Y, 0.5, 0.5, eps=0.0).item() == pytest.approx(0.308880, abs=1e-6)
    # alpha = 0.3 (FP), beta = 0.7 (FN): class 0: 1 - 1.5 / (1.5 + 0.06 + 0.35) = 0.41 / 1.91 = 0.214660
    #                                     class 1: 1 - 1.0 / (1.0 + 0.15 + 0.7) = 0.85 / 1.85 = 0.459459
    assert tversky_loss(GOLD_P, GOLD_Y, 0.3, 0.7, eps=0.0).item() == pytest.approx((0.214660 + 0.459459) / 2,
                                                                                  abs=1e-6)
    # alpha weights false positives: (1, 0) gives FP / (TP + FP), (0, 1) gives FN / (TP + FN).
    fp_only = (0.2 / 1.7 + 0.5 / 1.5) / 2
    fn_only = (0.5 / 2.0 + 1.0 / 2.0) / 2
    assert tversky_loss(GOLD_P, GOLD_Y, 1.0, 0.0, eps=0.0).item() == pytest.approx(fp_only, abs=1e-12)
    assert tversky_loss(GOLD_P, GOLD_Y, 0.0, 1.0, eps=0.0).item() == pytest.approx(fn_only, abs=1e-12)
    # eps enters numerator and denominator: class 0 with alpha = beta = 0.5, eps = 0.1 -> 1 - 1.6 / 1.95.
    eps_gold = ((1 - 1.6 / 1.95) + (1 - 1.1 / 1.85)) / 2
    assert tversky_loss(GOLD_P, GOLD_Y, 0.5, 0.5, eps=0.1).item() == pytest.approx(eps_gold, abs=1e-12)


def test_tversky_golden_per_class_weights_and_mask():
    # alpha = (0.3, 0.5), beta = (0.7, 0.5): class 0 0.214660, class 1 0.428571; mean 0.321616.
    alpha, beta = torch.tensor([0.3, 0.5]), torch.tensor([0.7, 0.5])
    assert tversky_loss(GOLD_P, GOLD_Y, alpha, beta, eps=0.0).item() == pytest.approx(0.321616, abs=1e-6)
    # Dropping class 1 leaves class 0 alone; a (B,) mask keeps or drops whole samples.
    keep0 = torch.tensor([[True, False]])
    assert tversky_loss(GOLD_P, GOLD_Y, alpha, beta, eps=0.0, mask=keep0).item() == pytest.approx(0.214660, abs=1e-6)
    assert tversky_loss(GOLD_P, GOLD_Y, alpha, beta, eps=0.0, mask=torch.tensor([True])).item() == pytest.approx(
        0.321616, abs=1e-6)


def random_seg(shape=(3, 4, 5, 6, 7), seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    probs = torch.sigmoid(2 * torch.randn(shape, generator=g, dtype=dtype))
    targets = (torch.rand(shape, generator=g, dtype=dtype) < 0.3).to(dtype)
    targets[0, 0] = 0  # an empty target: TP = FN = 0
    return probs, targets


@pytest.mark.parametrize("shape", [(3, 4, 5, 6, 7), (2, 3, 9, 8), (4, 1, 11)])
@pytest.mark.parametrize("alpha,beta,eps", [(0.5, 0.5, 1e-5), (0.3, 0.7, 1e-5), (0.9, 0.2, 1.0)])
def test_tversky_matches_monai_scalar_weights(shape, alpha, beta, eps):
    probs, targets = random_seg(shape, seed=len(shape))
    expected = MonaiTverskyLoss(alpha=alpha, beta=beta, smooth_nr=eps, smooth_dr=eps)(probs, targets)
    torch.testing.assert_close(tversky_loss(probs, targets, alpha, beta, eps), expected, rtol=1e-12, atol=1e-12)
    # float32 and bool targets too
    expected32 = MonaiTverskyLoss(alpha=alpha, beta=beta, smooth_nr=eps, smooth_dr=eps)(probs.float(), targets.float())
    torch.testing.assert_close(tversky_loss(probs.float(), targets.bool(), alpha, beta, eps), expected32)


def test_tversky_matches_monai_per_class_loop():
    # SegVL's weights: nodule (0.3, 0.7), effusion (0.4, 0.6), others (0.5, 0.5).
    probs, targets = random_seg((3, 4, 5, 6, 7), seed=10)
    alpha, beta = torch.tensor([0.3, 0.4, 0.5, 0.5]), torch.tensor([0.7, 0.6, 0.5, 0.5])
    per_class = [MonaiTverskyLoss(alpha=float(alpha[c]), beta=float(beta[c]))(probs[:, c:c + 1], targets[:, c:c + 1])
                 for c in range(4)]  # each the mean over B of class c
    expected = torch.stack(per_class).mean()
    torch.testing.assert_close(tversky_loss(probs, targets, alpha, beta), expected, rtol=1e-12, atol=1e-12)
    module = TverskyLoss(alpha, beta)
    torch.testing.assert_close(module(seg_probs=probs, seg_targets=targets), expected, rtol=1e-6, atol=1e-6)


def test_tversky_mask_is_mean_of_monai_scores_over_kept_pairs():
    probs, targets = random_seg((4, 3, 6, 5), seed=11)
    mask = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    scores = MonaiTverskyLoss(alpha=0.3, beta=0.7, reduction="none")(probs, targets)  # (B, C)
    torch.testing.assert_close(tversky_loss(probs, targets, 0.3, 0.7, mask=mask), scores[mask].mean(),
                               rtol=1e-12, atol=1e-12)
    sample_mask = torch.tensor([True, False, True, False])
    torch.testing.assert_close(tversky_loss(probs, targets, 0.3, 0.7, mask=sample_mask), scores[sample_mask].mean(),
                               rtol=1e-12, atol=1e-12)


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [x.detach().clone().requires_grad_() for x in tensors]


def test_tversky_gradcheck():
    probs, targets = random_seg((2, 3, 3, 4), seed=12)
    probs = probs.clamp(0.05, 0.95)
    alpha, beta = torch.tensor([0.3, 0.4, 0.5], dtype=torch.float64), torch.tensor([0.7, 0.6, 0.5], dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.autograd.gradcheck(lambda p: tversky_loss(p, targets, 0.3, 0.7), leaves(probs))
    assert torch.autograd.gradcheck(lambda p: tversky_loss(p, targets, alpha, beta, mask=mask), leaves(probs))
    # alpha and beta are differentiable too (e.g. if someone learns them)
    assert torch.autograd.gradcheck(lambda p, a, b: tversky_loss(p, targets, a, b, mask=mask),
                                    leaves(probs, alpha, beta))


def test_tversky_dropped_pairs_have_zero_gradient_and_are_never_read():
    probs, targets = random_seg((2, 3, 4, 5), seed=13)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    (p,) = leaves(probs)
    loss = tversky_loss(p, targets, 0.3, 0.7, mask=mask)
    loss.backward()
    dropped = ~mask
    assert torch.equal(p.grad[dropped], torch.zeros_like(p.grad[dropped]))
    assert (p.grad[mask] != 0).any(dim=-1).all()
    # Garbage in a dropped pair's targets (even NaN) or probabilities changes nothing.
    garbage_t, garbage_p = targets.clone(), probs.clone()
    garbage_t[dropped] = float("nan")
    garbage_p[dropped] = 0.123
    assert tversky_loss(garbage_p, garbage_t, 0.3, 0.7, mask=mask).item() == loss.item()


def test_tversky_all_dropped_is_zero_with_zero_gradient():
    probs = torch.zeros(2, 3, 4, dtype=torch.float64, requires_grad=True)  # empty pairs: 0 / 0 at eps = 0
    targets = torch.zeros(2, 3, 4, dtype=torch.float64)
    for eps in (0.0, 1e-5):
        probs.grad = None
        loss = tversky_loss(probs, targets, 0.5, 0.5, eps=eps, mask=torch.zeros(2, 3, dtype=torch.bool))
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(probs.grad, torch.zeros_like(probs))


def test_tversky_module_buffers_and_output_dict():
    alpha, beta = torch.tensor([0.3, 0.5]), torch.tensor([0.7, 0.5])
    module = TverskyLoss(alpha, beta)
    assert set(dict(module.named_buffers())) == {"alpha", "beta"}
    module = module.double()
    assert module.alpha.dtype == torch.float64
    outputs = {"seg_probs": GOLD_P, "seg_targets": GOLD_Y, "seg_available": torch.tensor([[True, True]]),
               "image_emb": torch.zeros(1, 4)}
    torch.testing.assert_close(module(**outputs), tversky_loss(GOLD_P, GOLD_Y, alpha, beta))
    scalar = TverskyLoss(0.3, 0.7, eps=0.0)
    assert dict(scalar.named_buffers()) == {}
    assert scalar(**outputs).item() == pytest.approx((0.214660 + 0.459459) / 2, abs=1e-6)


BAD_TVERSKY = {
    "no spatial dim": (torch.zeros(2, 3), torch.zeros(2, 3), 0.5, None),
    "empty batch": (torch.zeros(0, 3, 4), torch.zeros(0, 3, 4), 0.5, None),
    "target shape": (torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), 0.5, None),
    "alpha length": (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2), None),
    "mask shape": (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 0.5, torch.ones(3, 2, dtype=torch.bool)),
}


@pytest.mark.parametrize("name", BAD_TVERSKY)
def test_tversky_bad_shapes_raise(name):
    probs, targets, alpha, mask = BAD_TVERSKY[name]
    with pytest.raises(ValueError, match="probs|targets|alpha|mask"):
        tversky_loss(probs, targets, alpha, 0.5, mask=mask)
    with pytest.raises(ValueError, match="probs|targets|alpha|mask"):
        TverskyLoss(alpha, 0.5)(seg_probs=probs, seg_targets=targets, seg_available=mask)


def test_tversky_bad_weights_or_eps_raise():
    probs = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="beta"):
        tversky_loss(probs, probs, 0.5, torch.ones(3, 1))
    with pytest.raises(ValueError, match="eps"):
        tversky_loss(probs, probs, 0.5, 0.5, eps=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        TverskyLoss(torch.ones(2, 2), 0.5)


# ---------------------------------------------------------------------------------------------------
# Masked BCE

def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


GOLD_LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
GOLD_TARGETS = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
GOLD_AVAILABLE = torch.tensor([[True, True, False], [True, False, True]])


def test_masked_bce_golden():
    # BCE(z, y) = softplus(z) - y z:  (2, 1) -> softplus(-2) = 0.126928; (-1, 0) -> softplus(-1) = 0.313262;
    # (0, 0) -> log 2 = 0.693147; (-2, 1) -> softplus(2) = 2.126928. Sum 3.260265 over 4 available: 0.815066.
    expected = (softplus(-2.0) + softplus(-1.0) + math.log(2.0) + softplus(2.0)) / 4
    assert expected == pytest.approx(0.815066, abs=1e-6)
    assert masked_bce_loss(GOLD_LOGITS, GOLD_TARGETS, GOLD_AVAILABLE).item() == pytest.approx(expected, abs=1e-6)
    # availability as 0/1 floats works the same
    assert masked_bce_loss(GOLD_LOGITS, GOLD_TARGETS, GOLD_AVAILABLE.float()).item() == pytest.approx(expected,
                                                                                                      abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_bce_matches_torch_on_available_subset(seed):
    g = torch.Generator().manual_seed(seed)
    logits = 5 * torch.randn(6, 18, generator=g, dtype=torch.float64)
    targets = (torch.rand(6, 18, generator=g) < 0.3).double()
    available = torch.rand(6, 18, generator=g) < 0.6
    expected = F.binary_cross_entropy_with_logits(logits[available], targets[available])
    torch.testing.assert_close(masked_bce_loss(logits, targets, available), expected, rtol=1e-12, atol=1e-12)
    # everything available: plain BCE mean
    torch.testing.assert_close(masked_bce_loss(logits, targets, torch.ones_like(available)),
                               F.binary_cross_entropy_with_logits(logits, targets), rtol=1e-12, atol=1e-12)


def test_masked_bce_missing_labels_have_exactly_zero_gradient():
    (logits,) = leaves(GOLD_LOGITS.double())
    targets = GOLD_TARGETS.double()
    loss = masked_bce_loss(logits, targets, GOLD_AVAILABLE)
    loss.backward()
    assert logits.grad[0, 2].item() == 0.0 and logits.grad[1, 1].item() == 0.0
    # available entries: d/dz = (sigmoid(z) - y) / count
    expected = (torch.sigmoid(GOLD_LOGITS.double()) - targets) / 4
    torch.testing.assert_close(logits.grad[GOLD_AVAILABLE], expected[GOLD_AVAILABLE], rtol=1e-12, atol=1e-12)
    # A missing label's target or logit (even inf or NaN) does not change the loss or the other gradients.
    for z, y in ((100.0, 1.0), (-7.0, 0.0), (float("inf"), float("nan")), (float("nan"), 0.5)):
        (changed,) = leaves(GOLD_LOGITS.double())
        with torch.no_grad():
            changed[0, 2] = z
        changed_targets = targets.clone()
        changed_targets[1, 1] = y
        other = masked_bce_loss(changed, changed_targets, GOLD_AVAILABLE)
        other.backward()
        assert other.item() == loss.item()
        assert torch.equal(changed.grad, logits.grad)


def test_masked_bce_all_missing_is_zero_not_nan():
    (logits,) = leaves(torch.randn(3, 5))
    loss = masked_bce_loss(logits, torch.ones(3, 5), torch.zeros(3, 5, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros(3, 5))


def test_masked_bce_gradcheck_and_stability():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, generator=g, dtype=torch.float64)
    targets = (torch.rand(4, 5, generator=g) < 0.5).double()
    available = torch.rand(4, 5, generator=g) < 0.5
    assert torch.autograd.gradcheck(lambda z: masked_bce_loss(z, targets, available), leaves(logits))
    # Extreme logits: the wrong side of 100 costs 100, the right side ~ e^-100.
    big = torch.tensor([[100.0, -100.0]])
    loss = masked_bce_loss(big, torch.tensor([[0.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx(50.0)


def test_masked_bce_module_takes_output_dict():
    outputs = {"label_logits": GOLD_LOGITS, "label_targets": GOLD_TARGETS, "label_available": GOLD_AVAILABLE,
               "image_emb": torch.zeros(2, 4), "logit_scale": torch.tensor(10.0)}
    torch.testing.assert_close(MaskedBCELoss()(**outputs), masked_bce_loss(GOLD_LOGITS, GOLD_TARGETS, GOLD_AVAILABLE))


BAD_BCE = {
    "1-D logits": (torch.zeros(4), torch.zeros(4), torch.ones(4)),
    "target shape": (torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3)),
    "available shape": (torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(3)),
}


@pytest.mark.parametrize("name", BAD_BCE)
def test_masked_bce_bad_shapes_raise(name):
    logits, targets, available = BAD_BCE[name]
    with pytest.raises(ValueError, match="logits"):
        masked_bce_loss(logits, targets, available)
    with pytest.raises(ValueError, match="logits"):
        MaskedBCELoss()(label_logits=logits, label_targets=targets, label_available=available)
