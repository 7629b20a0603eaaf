"""SWCA (SCALE-VLP's soft-weighted SigLIP): exact reduction to siglip_loss, hand-computed golden
numbers, plain-loop references for the affinities and the loss, gradients (into the embeddings, never
into the affinities), the per-rank row split used under torch.distributed, and input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ctvlp.losses.siglip import siglip_loss
from ctvlp.losses.swca import (SwcaLoss, affinity_blend, affinity_weights, knowledge_affinity, label_affinity,
                               row_normalise, spatial_affinity, swca_loss)
from ctvlp.recipes import get_recipe

# Golden inputs (B = 3, D = 2): I = [[1, 0], [0, 1], [0.6, 0.8]], T = [[1, 0], [0.8, 0.6], [0, 1]], t = 2, b = -1:
# I T^T = [[1, 0.8, 0], [0, 0.6, 1], [0.6, 0.96, 0.8]], logits s = [[1, 0.6, -1], [-1, 0.2, 1], [0.2, 0.92, 0.6]].
IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
TXT = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
SCALE, BIAS = torch.tensor(2.0), torch.tensor(-1.0)
# A hand-picked row-stochastic W.
W_HAND = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.25, 0.25, 0.5]])

# Golden tokens (3 volumes, 3 token slots of which the first 2 are valid, C = 2); the padded slot
# of volume 1 holds (9, 9) and must be ignored.
#   volume 0: (0, 0), (2, 0) -> mu (1, 0), S = diag(1, 0)     (population covariance)
#   volume 1: (0, 1), (2, 1) -> mu (1, 1), S = diag(1, 0)
#   volume 2: (1, 0), (1, 2) -> mu (1, 1), S = diag(0, 1)
# ||mu_i - mu_j||^2: (0,1) 1, (0,2) 1, (1,2) 0;  ||S_i - S_j||_F^2: (0,1) 0, (0,2) 2, (1,2) 2.
TOKENS = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 0.0]],
                       [[0.0, 1.0], [2.0, 1.0], [9.0, 9.0]],
                       [[1.0, 0.0], [1.0, 2.0], [0.0, 0.0]]])
MASK = torch.tensor([[True, True, False]] * 3)
# Labels: {0}, {0, 1}, {} (normal).
LABELS = torch.tensor([[1, 0], [1, 1], [0, 0]])


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x)."""
    return math.log1p(math.exp(x))


def random_batch(b: int = 5, d: int = 4, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    txt = F.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=1)
    return img, txt


def random_inputs(b: int = 5, n: int = 6, c: int = 3, e: int = 7, seed: int = 0, dtype=torch.float64):
    """Tokens (B, N, C) with a ragged mask (>= 2 valid per volume), report embeddings (B, E), labels (B, 4)."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, n, c, generator=g, dtype=dtype)
    lengths = torch.randint(2, n + 1, (b,), generator=g)
    mask = torch.arange(n)[None, :] < lengths[:, None]
    report = torch.randn(b, e, generator=g, dtype=dtype) + 0.5
    labels = (torch.rand(b, 4, generator=g) < 0.4).long()
    labels[0] = 0  # a normal report
    return tokens, mask, report, labels


# --- affinities -------------------------------------------------------------------------------


def test_spatial_affinity_golden():
    # kappa_mu = 1, kappa_S = 2: K_01 = e^-1 e^0 = e^-1, K_02 = e^-1 e^-1 = e^-2, K_12 = e^0 e^-1 = e^-1.
    e1, e2 = math.exp(-1), math.exp(-2)
    expected = torch.tensor([[1.0, e1, e2], [e1, 1.0, e1], [e2, e1, 1.0]])
    torch.testing.assert_close(spatial_affinity(TOKENS, MASK, 1.0, 2.0), expected)
    # Median heuristic: off-diagonal d_mu = {1, 1, 0} (x2) -> kappa_mu = 1; d_S = {0, 2, 2} -> kappa_S = 2.
    torch.testing.assert_close(spatial_affinity(TOKENS, MASK), expected)


def spatial_reference(tokens: torch.Tensor, mask: torch.Tensor, kappa_mu: float, kappa_s: float) -> torch.Tensor:
    """Per-volume loops for mean and covariance, per-pair explicit (C, C) differences."""
    b = tokens.shape[0]
    stats = []
    for i in range(b):
        x = tokens[i][mask[i]]  # (n_i, C)
        mu = sum(x[k] for k in range(len(x))) / len(x)
        cov = sum(torch.outer(x[k] - mu, x[k] - mu) for k in range(len(x))) / len(x)
        stats.append((mu, cov))
    k = torch.empty(b, b, dtype=tokens.dtype)
    for i in range(b):
        for j in range(b):
            d_mu = ((stats[i][0] - stats[j][0]) ** 2).sum()
            d_s = ((stats[i][1] - stats[j][1]) ** 2).sum()
            k[i, j] = torch.exp(-d_mu / kappa_mu) * torch.exp(-d_s / kappa_s)
    return k


@pytest.mark.parametrize("seed", [0, 1])
def test_spatial_affinity_matches_loop_reference(seed):
    tokens, mask, _, _ = random_inputs(b=6, n=7, c=5, seed=seed)
    tokens[~mask] = float("nan")  # padded slots never reach the result
    expected = spatial_reference(tokens, mask, 4.0, 1.5)
    got = spatial_affinity(tokens, mask, 4.0, 1.5)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got, got.T, rtol=0, atol=1e-12)
    assert torch.all(got.diagonal() == 1.0)
    # float32 through the Gram identity stays close to the float64 loops.
    torch.testing.assert_close(spatial_affinity(tokens.float(), mask, 4.0, 1.5), expected.float(), rtol=1e-4, atol=1e-5)


def test_label_affinity_is_jaccard_with_two_normal_reports_similar():
    # {0} vs {0, 1}: 1 shared of 2 -> 0.5; anything vs {} -> 0; {} vs {} -> 1 (two normal reports).
    expected = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(label_affinity(LABELS), expected)
    torch.testing.assert_close(label_affinity(LABELS.bool()), expected)
    two_normals = torch.zeros(2, 5)
    torch.testing.assert_close(label_affinity(two_normals), torch.ones(2, 2))


def test_knowledge_affinity_is_clamped_cosine():
    r = torch.tensor([[1.0, 0.0], [3.0, 4.0], [-1.0, 0.0]])
    # cos: (0,1) 0.6, (0,2) -1 -> 0, (1,2) -0.6 -> 0.
    expected = torch.tensor([[1.0, 0.6, 0.0], [0.6, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(knowledge_affinity(r), expected)


def test_blended_weights_are_row_normalised_from_a_symmetric_blend():
    tokens, mask, report, labels = random_inputs(b=6, seed=3)
    k_spa, k_kn = spatial_affinity(tokens, mask), knowledge_affinity(report)
    for k in (k_spa, k_kn, label_affinity(labels)):
        torch.testing.assert_close(k, k.T)
        assert bool((k >= 0).all()) and bool((k <= 1 + 1e-12).all())
    w = affinity_weights(k_spa, k_kn, alpha=0.3)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(6, dtype=w.dtype))
    blend = 0.3 * k_spa + 0.7 * k_kn
    torch.testing.assert_close(w, blend / blend.sum(dim=1, keepdim=True))
    # W = D^-1 A with A symmetric: D W is symmetric.
    dw = blend.sum(dim=1, keepdim=True) * w
    torch.testing.assert_close(dw, dw.T)
    # alpha = 1 / 0 use one affinity only (the other may be missing).
    torch.testing.assert_close(affinity_weights(k_spa, None, 1.0), k_spa / k_spa.sum(1, keepdim=True))
    torch.testing.assert_close(affinity_weights(None, k_kn, 0.0), k_kn / k_kn.sum(1, keepdim=True))


def test_golden_blended_weights():
    # alpha = 0.5: A = (K^spa + K^lab) / 2; row 0 = [1, (e^-1 + 0.5) / 2, e^-2 / 2], divided by its sum.
    w = affinity_weights(spatial_affinity(TOKENS, MASK, 1.0, 2.0), label_affinity(LABELS), 0.5)
    row0 = torch.tensor([1.0, (math.exp(-1) + 0.5) / 2, math.exp(-2) / 2])
    torch.testing.assert_close(w[0], row0 / row0.sum())


# --- the loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["weights", "soft_targets"])
def test_reduces_exactly_to_siglip(variant):
    img, txt = random_batch(b=6, d=5, seed=1, dtype=torch.float32)
    t, bias = torch.tensor(10.0), torch.tensor(-4.0)
    expected = siglip_loss(img, txt, t, bias)
    w = affinity_weights(*(torch.rand(6, 6, generator=torch.Generator().manual_seed(0)),) * 2, alpha=0.5)
    cases = [swca_loss(img, txt, t, bias, variant=variant),  # no affinity
             swca_loss(img, txt, t, bias, torch.zeros(6, 6), variant=variant, eps=0.0)]  # zero W
    cases.append(swca_loss(img, txt, t, bias, w, variant=variant, eps=0.0, weight=0.0))  # soft part off
    for got in cases:
        assert torch.equal(got, expected)
    # The module with the soft part off, affinities computed from the batch.
    tokens, mask, report, _ = random_inputs(b=6, seed=2, dtype=torch.float32)
    off = SwcaLoss(variant=variant, eps=0.0, weight=0.0)
    assert torch.equal(off(image_emb=img, text_emb=txt, logit_scale=t, logit_bias=bias, tokens=tokens,
                           token_mask=mask, report_emb=report), expected)


def test_golden_weights_variant():
    # Per pair -log sigmoid(z s) = softplus(-z s):
    #   [[0.313262, 1.037488, 0.313262], [0.313262, 0.598139, 1.313262], [0.798139, 1.255414, 0.437488]].
    # Weighted by 1 + W: row 0: 1.5 * 0.313262 + 1.5 * 1.037488 + 0.313262 = 2.339387;
    #   row 1: 0.313262 + 1.5 * (0.598139 + 1.313262) = 3.180364;
    #   row 2: 1.25 * (0.798139 + 1.255414) + 1.5 * 0.437488 = 3.223174. Sum 8.742925, / B = 2.914308.
    loss = swca_loss(IMG, TXT, SCALE, BIAS, W_HAND, variant="weights")
    assert loss.item() == pytest.approx(2.914308, abs=1e-5)
    # weight = 2 doubles the extra term: (8.742925 + (8.742925 - 6.379714)) / 3 with SigLIP's sum 6.379714.
    loss2 = swca_loss(IMG, TXT, SCALE, BIAS, W_HAND, variant="weights", weight=2.0)
    assert loss2.item() == pytest.approx((2 * 8.742925 - 6.379714) / 3, abs=1e-5)


def test_golden_soft_targets_variant():
    # eps = 0.5: q = 0.5 I + 0.5 W = [[0.75, 0.25, 0], [0, 0.75, 0.25], [0.125, 0.125, 0.75]].
    # Per pair q softplus(-s) + (1 - q) softplus(s):
    #   row 0: 0.563262 + 0.887488 + 0.313262 = 1.764012;  row 1: 0.313262 + 0.648139 + 1.063262 = 2.024663;
    #   row 2: 0.773139 + 1.140414 + 0.587488 = 2.501041.  Sum 6.289716, / B = 2.096572.
    loss = swca_loss(IMG, TXT, SCALE, BIAS, W_HAND, variant="soft_targets", eps=0.5)
    assert loss.item() == pytest.approx(2.096572, abs=1e-5)
    assert swca_loss(IMG, TXT, SCALE, BIAS, W_HAND, variant="soft-targets", eps=0.5).item() == loss.item()


# A near-duplicate pair (0, 1) at affinity 0.9, a weak one (1, 2) at 0.2; a volume with itself: 1.
A_DUP = torch.tensor([[1.0, 0.9, 0.0], [0.9, 1.0, 0.2], [0.0, 0.2, 1.0]])


def test_golden_default_soft_targets_soften_the_near_duplicate():
    """The paper's equation with the default eps = 0.1 on the unnormalised affinity A:
    q = 0.9 I + 0.1 A = [[1, 0.09, 0], [0.09, 1, 0.02], [0, 0.02, 1]]. Per pair q softplus(-s) + (1 - q) softplus(s)
    = softplus(s) - q s off the diagonal, so L = L_SigLIP - (1/B) sum_{i != j} q_ij s_ij
    = 2.126571 - (0.09 * 0.6 + 0.09 * (-1) + 0.02 * 1 + 0.02 * 0.92) / 3 = 2.126571 - 0.0024 / 3 = 2.125771."""
    hard = siglip_loss(IMG, TXT, SCALE, BIAS)
    assert hard.item() == pytest.approx(2.126571, abs=1e-5)
    soft = swca_loss(IMG, TXT, SCALE, BIAS, A_DUP)  # the default variant: soft_targets, eps 0.1
    assert soft.item() == pytest.approx(2.125771, abs=1e-5)
    assert soft.item() == swca_loss(IMG, TXT, SCALE, BIAS, A_DUP, variant="soft_targets", eps=0.1).item()
    assert SwcaLoss().variant == "soft_targets" and SwcaLoss().eps == 0.1


def test_default_pulls_a_near_duplicate_negative_together():
    """B = 32 one-hot embeddings, t = 10, b = -5: every negative logit is s = -5. The gradient on the
    near-duplicate pair (A = 0.9, every other negative 0.3) is dL/ds_01 = (sigmoid(-5) - q_01) / B:
    SigLIP +0.000209 (pushed apart), the ``weights`` variant (1 + W_01) sigmoid(-5) / B = +0.000226
    (pushed apart harder: W_01 = 0.9 / 10.9), the default soft targets (0.006693 - 0.09) / 32 = -0.002603
    (pulled together)."""
    b = 32
    a = torch.full((b, b), 0.3, dtype=torch.float64)
    a.fill_diagonal_(1.0)
    a[0, 1] = a[1, 0] = 0.9
    eye = torch.eye(b, dtype=torch.float64)
    t, bias = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)

    def grad_01(loss_fn) -> float:  # s_01 = t <I_0, T_1> with I = T = identity: dL/dI_01 = t dL/ds_01
        img = eye.clone().requires_grad_()
        loss_fn(img).backward()
        return float(img.grad[0, 1] / t)

    siglip = grad_01(lambda img: siglip_loss(img, eye, t, bias))
    weights = grad_01(lambda img: swca_loss(img, eye, t, bias, row_normalise(a), variant="weights"))
    soft = grad_01(lambda img: swca_loss(img, eye, t, bias, a))
    assert siglip == pytest.approx(0.000209, abs=5e-7) and siglip > 0
    assert weights == pytest.approx(0.000226, abs=5e-7) and weights > siglip
    assert soft == pytest.approx(-0.002603, abs=5e-7) and soft < 0


def test_module_soft_targets_use_the_unnormalised_blend_and_weights_the_row_normalised_one():
    img, txt = random_batch(b=3, d=2, seed=12)
    k_spa, k_lab = spatial_affinity(TOKENS, MASK, 1.0, 2.0), label_affinity(LABELS)
    a = affinity_blend(k_spa, k_lab, 0.5)
    torch.testing.assert_close(torch.diagonal(a), torch.ones(3))
    torch.testing.assert_close(affinity_weights(k_spa, k_lab, 0.5), row_normalise(a))
    inputs = dict(image_emb=img, text_emb=txt, logit_scale=SCALE, logit_bias=BIAS, tokens=TOKENS, token_mask=MASK,
                  labels=LABELS)
    for variant, affinity in (("soft_targets", a), ("weights", row_normalise(a))):
        module = SwcaLoss(alpha=0.5, variant=variant, kappa_mu=1.0, kappa_s=2.0, knowledge="labels")
        expected = swca_loss(img, txt, SCALE, BIAS, affinity.to(img.dtype), variant=variant, eps=0.1)
        torch.testing.assert_close(module(**inputs), expected)


def test_scalevlp_recipe_trains_the_soft_targets():
    options = get_recipe("scalevlp").loss.options["swca"]
    assert options["variant"] == "soft_targets" and options["eps"] == 0.1


def swca_reference(img, txt, t, bias, w, variant, eps=0.0, weight=1.0):
    """Loops over i, j from 0-d tensor ops: weighted -log sigmoid(z s), or BCE against soft targets."""
    b = img.shape[0]
    total = 0.0
    for i in range(b):
        for j in range(b):
            s = t * sum(img[i, d] * txt[j, d] for d in range(img.shape[1])) + bias
            p = 1.0 / (1.0 + torch.exp(-s))
            y = 1.0 if i == j else 0.0
            if variant == "weights":
                total = total - (1.0 + weight * w[i, j]) * torch.log(p if i == j else 1.0 - p)
            else:
                q = (1.0 - eps) * y + eps * w[i, j]
                total = total - (q * torch.log(p) + (1.0 - q) * torch.log(1.0 - p))
    return total / b


@pytest.mark.parametrize("variant,eps,weight", [("weights", 0.0, 1.0), ("weights", 0.0, 3.0),
                                                ("soft_targets", 0.3, 1.0)])
def test_loss_and_gradients_match_loop_reference(variant, eps, weight):
    img, txt = random_batch(b=4, d=3, seed=4)
    t, bias = torch.tensor(5.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)
    tokens, mask, report, _ = random_inputs(b=4, seed=5)
    w = affinity_weights(spatial_affinity(tokens, mask), knowledge_affinity(report), 0.5)
    fast = [x.clone().requires_grad_() for x in (img, txt, t, bias)]
    ref = [x.clone().requires_grad_() for x in (img, txt, t, bias)]
    loss = swca_loss(*fast, w, variant=variant, eps=eps, weight=weight)
    expected = swca_reference(*ref, w, variant, eps, weight)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    loss.backward()
    expected.backward()
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_gradient_reaches_embeddings_but_not_the_affinities():
    img, txt = random_batch(b=5, d=4, seed=6, dtype=torch.float32)
    tokens, mask, report, _ = random_inputs(b=5, seed=7, dtype=torch.float32)
    leaves = {"image_emb": img.requires_grad_(), "text_emb": txt.requires_grad_(),
              "logit_scale": torch.tensor(5.0, requires_grad=True),
              "logit_bias": torch.tensor(-2.0, requires_grad=True),
              "tokens": tokens.requires_grad_(), "report_emb": report.requires_grad_()}
    for variant in ("weights", "soft_targets"):
        for x in leaves.values():
            x.grad = None
        loss = SwcaLoss(variant=variant, eps=0.2)(**leaves, token_mask=mask)
        loss.backward()
        for key in ("image_emb", "text_emb", "logit_scale", "logit_bias"):
            assert leaves[key].grad is not None and bool(leaves[key].grad.abs().sum() > 0), key
        assert leaves["tokens"].grad is None and leaves["report_emb"].grad is None
    # A ready W that requires grad gets none either; the affinities returned carry no graph.
    w = torch.rand(5, 5, requires_grad=True)
    swca_loss(img, txt, 5.0, -2.0, w).backward()
    assert w.grad is None
    assert not spatial_affinity(tokens, mask).requires_grad and not knowledge_affinity(report).requires_grad


def test_soft_weighting_changes_the_loss_and_module_equals_function():
    img, txt = random_batch(b=5, d=4, seed=8, dtype=torch.float32)
    tokens, mask, report, labels = random_inputs(b=5, seed=9, dtype=torch.float32)
    t, bias = torch.tensor(5.0), torch.tensor(-2.0)
    outputs = {"image_emb": img, "text_emb": txt, "logit_scale": t, "logit_bias": bias, "tokens": tokens,
               "token_mask": mask, "report_emb": report, "labels": labels, "sentence_emb": torch.zeros(2, 4)}
    for knowledge, k_kn in (("report_emb", knowledge_affinity(report)), ("labels", label_affinity(labels))):
        for variant in ("weights", "soft_targets"):
            module = SwcaLoss(alpha=0.4, variant=variant, eps=0.3, weight=2.0, kappa_mu=3.0, knowledge=knowledge)
            expected = swca_loss(img, txt, t, bias, spatial=spatial_affinity(tokens, mask, 3.0, None),
                                 knowledge=k_kn, alpha=0.4, variant=variant, eps=0.3, weight=2.0)
            torch.testing.assert_close(module(**outputs), expected)
            assert not torch.isclose(expected, siglip_loss(img, txt, t, bias))


def concatenating(sent: list[list[torch.Tensor]], rank: int):
    """A stand-in all-gather for ``rank``: its k-th call returns the k-th tensors every rank handed in,
    concatenated in rank order."""
    calls = iter(range(len(sent[rank])))

    def gather(x: torch.Tensor) -> torch.Tensor:
        k = next(calls)
        assert x.shape == sent[rank][k].shape
        return torch.cat([sent[q][k] for q in range(len(sent))])

    return gather


def test_rank_rows_average_to_the_single_process_loss():
    """The distributed path (``rows_loss``) with a simulated all-gather: rank r holds rows r*B..(r+1)*B-1;
    a first pass records what every rank hands to the gather, a second returns the concatenation over
    ranks, as ``gather_features`` does. The mean over ranks must equal the single-process loss, and
    the summed gradient of the rank losses on each embedding row (the all-gather's backward sums every
    rank's gradient for a row) must be W times the single-process one."""
    world, b_local = 2, 3
    n = world * b_local
    img, txt = random_batch(b=n, d=4, seed=10)
    tokens, mask, report, labels = random_inputs(b=n, seed=11)
    t, bias = torch.tensor(4.0, dtype=torch.float64), torch.tensor(-1.0, dtype=torch.float64)
    for variant, knowledge in (("weights", "report_emb"), ("soft_targets", "labels")):
        module = SwcaLoss(alpha=0.5, variant=variant, eps=0.4, kappa_mu=2.0, kappa_s=0.5, knowledge=knowledge)
        ref_img, ref_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
        reference = module(image_emb=ref_img, text_emb=ref_txt, logit_scale=t, logit_bias=bias, tokens=tokens,
                           token_mask=mask, report_emb=report, labels=labels)
        reference.backward()
        g_img, g_txt = img.clone().requires_grad_(), txt.clone().requires_grad_()
        rows = [slice(r * b_local, (r + 1) * b_local) for r in range(world)]
        local = [dict(image_emb=g_img[s], text_emb=g_txt[s], logit_scale=t, logit_bias=bias, tokens=tokens[s],
                      token_mask=mask[s], report_emb=report[s], labels=labels[s]) for s in rows]
        sent: list[list[torch.Tensor]] = [[] for _ in range(world)]
        for r in range(world):  # pass 1: record each rank's gather inputs (in call order)
            module.rows_loss(**local[r], gather=lambda x, r=r: sent[r].append(x) or x, offset=0)
        losses = []
        for r in range(world):  # pass 2: each gather call returns the concatenation over ranks
            losses.append(module.rows_loss(**local[r], gather=concatenating(sent, r), offset=r * b_local))
        torch.testing.assert_close(torch.stack(losses).mean(), reference)
        torch.stack(losses).sum().backward()
        torch.testing.assert_close(g_img.grad, world * ref_img.grad)
        torch.testing.assert_close(g_txt.grad, world * ref_txt.grad)


# --- input checks -----------------------------------------------------------------------------

BAD_LOSS_INPUTS = {
    "different B": dict(image_emb=torch.zeros(4, 3), text_emb=torch.zeros(5, 3)),
    "1-D image": dict(image_emb=torch.zeros(4), text_emb=torch.zeros(4, 3)),
    "empty batch": dict(image_emb=torch.zeros(0, 3), text_emb=torch.zeros(0, 3)),
}


@pytest.mark.parametrize("name", BAD_LOSS_INPUTS)
def test_bad_embedding_shapes_raise(name):
    with pytest.raises(ValueError, match="embeddings"):
        swca_loss(**BAD_LOSS_INPUTS[name], logit_scale=1.0, logit_bias=0.0)
    with pytest.raises(ValueError, match="embeddings"):
        SwcaLoss()(**BAD_LOSS_INPUTS[name], logit_scale=1.0, logit_bias=0.0)


def test_bad_affinity_and_side_inputs_raise():
    img, txt = random_batch(b=4, d=3, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"affinity must be \(B, B\) = \(4, 4\); got \(4, 5\)"):
        swca_loss(img, txt, 1.0, 0.0, torch.zeros(4, 5))
    with pytest.raises(ValueError, match="not both"):
        swca_loss(img, txt, 1.0, 0.0, torch.zeros(4, 4), spatial=torch.zeros(4, 4))
    with pytest.raises(ValueError, match="same shape"):
        swca_loss(img, txt, 1.0, 0.0, spatial=torch.ones(4, 4), knowledge=torch.ones(3, 3))
    with pytest.raises(ValueError, match="needs the knowledge affinity"):
        swca_loss(img, txt, 1.0, 0.0, spatial=torch.ones(4, 4), alpha=0.5)
    with pytest.raises(ValueError, match="logit_bias"):
        swca_loss(img, txt, 1.0, torch.zeros(2))
    with pytest.raises(ValueError, match="tokens must be"):
        spatial_affinity(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"token_mask must be \(B, N\) = \(4, 2\)"):
        spatial_affinity(torch.zeros(4, 2, 3), torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one valid token"):
        spatial_affinity(torch.zeros(2, 2, 3), torch.tensor([[True, True], [False, False]]))
    with pytest.raises(ValueError, match="report embeddings"):
        knowledge_affinity(torch.zeros(4))
    with pytest.raises(ValueError, match="labels must be"):
        label_affinity(torch.zeros(4, 2), torch.zeros(4, 3))
    module = SwcaLoss(alpha=0.5)
    with pytest.raises(ValueError, match="needs tokens"):
        module(image_emb=img, text_emb=txt, logit_scale=1.0, logit_bias=0.0, report_emb=torch.ones(4, 2))
    with pytest.raises(ValueError, match="needs report_emb"):
        module(image_emb=img, text_emb=txt, logit_scale=1.0, logit_bias=0.0, tokens=torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match=r"tokens must have the batch size 4 .* got \(3, 3, 2\)"):
        module(image_emb=img, text_emb=txt, logit_scale=1.0, logit_bias=0.0, tokens=torch.randn(3, 3, 2),
               report_emb=torch.ones(4, 2))


@pytest.mark.parametrize("kwargs,match", [({"variant": "hard"}, "unknown SWCA variant"), ({"eps": 1.5}, "eps"),
                                          ({"alpha": -0.1}, "alpha"), ({"weight": -1.0}, "weight"),
                                          ({"kappa_mu": 0.0}, "kappa_mu"), ({"knowledge": "ontology"}, "knowledge")])
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwcaLoss(**kwargs)
