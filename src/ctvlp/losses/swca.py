"""SCALE-VLP's soft-weighted contrastive alignment (SWCA; Mahdizadeh et al. 2025, arXiv 2511.02996):
SigLIP's pairwise sigmoid loss with pair weights or soft targets from a spatial and a knowledge
affinity between the samples of the batch. No code of the paper is public; this is the
reconstruction in METHODS.md (SCALE-VLP section), every coefficient a setting.

For L2-normalised image embeddings I (B, D), text embeddings T (B, D), the logit multiplier t
(already exponentiated) and bias b, s_ij = t <I_i, T_j> + b. Affinities (all detached: no gradient
flows into them):

    K^spa_ij = exp(-||mu_i - mu_j||^2 / kappa_mu) * exp(-||S_i - S_j||_F^2 / kappa_S)
               mu_i (C,), S_i (C, C): masked mean and (population) covariance of volume i's tokens
    K^kn_ij  = max(0, cos(r_i, r_j))      r_i a frozen text model's embedding of report i, or
             = Jaccard(labels_i, labels_j)  shared abnormality labels (two normal reports: 1)
    A        = clamp(alpha K^spa + (1 - alpha) K^kn, 0, 1)          (A_ii = 1: a volume's own affinity)
    W        = row_normalise(A)                                     (rows sum to 1)

and, with y = identity and lambda = ``weight``,

    soft_targets (the default):
                   L = -(1/B) sum_ij [q_ij log sigmoid(s_ij) + (1 - q_ij) log sigmoid(-s_ij)],
                   q_ij = (1 - eps) 1[i = j] + eps A_ij                (eps = 0.1)
    weights:       L = -(1/B) sum_ij (1 + lambda W_ij) log sigmoid(z_ij s_ij),   z_ij = 2 y_ij - 1

computed with ``F.logsigmoid``.

Soft targets from A, not W (a deviation from METHODS.md's literal text, which writes
q = (1 - eps) 1[i = j] + eps W_ij with the row-normalised W). The paper's point is that a
near-duplicate negative (a report saying the same thing, a volume of the same anatomy) is not pushed
apart as hard as an unrelated one. Row-normalised, every W_ij is about 1/B (a near-duplicate at
affinity 0.9 in a batch of 32 gets W ~ 0.08), so eps W_ij ~ 0.008 is below the sigmoid of any
negative logit worth mentioning and the target changes nothing; in the ``weights`` variant the
factor 1 + lambda W_ij > 1 even pushes the near-duplicate *harder* than SigLIP does. With A the
target of that pair is eps * 0.9 = 0.09: its gradient d L / d s_ij = (sigmoid(s_ij) - q_ij) / B
turns negative once sigmoid(s_ij) < q_ij, so the pair is pulled together (tests: at s = -5, B = 32
the gradient on the A = 0.9 pair is +0.000209 under SigLIP, +0.000226 under ``weights``,
-0.002603 under ``soft_targets``). Because A_ii = 1, q_ii = 1: the positives' targets stay hard.
The ``weights`` variant (with W, as printed) stays selectable.

Normalisation. METHODS.md prints the ``weights`` variant with 1/B^2 but also requires the loss to
reduce *exactly* to SigLIP when the soft part is off. :func:`~ctvlp.losses.siglip.siglip_loss` (like
the SigLIP paper) divides the sum over all B^2 pairs by B, so both variants here divide by B: with
W = 0 (or lambda = 0) the ``weights`` loss is siglip_loss bit for bit, and so is ``soft_targets``
with eps = 0. The printed 1/B^2 is our loss divided by B, a constant factor (a learning-rate change),
not a different objective. The soft part is switched off by ``weight`` (lambda) in ``weights``
and by ``eps`` in ``soft_targets``; ``weight`` does not enter ``soft_targets`` and ``eps`` does not
enter ``weights``. Because the rows of W sum to 1, lambda = 1 adds a total weight of 1 per image on
top of SigLIP's B unit weights; raise lambda to give the soft term more say.

Non-negativity: negative cosines are set to 0 (and the blend is clamped to [0, 1]) so that A is a
valid target, W a non-negative row-stochastic matrix and every weight 1 + lambda W_ij >= 1; a row
whose affinities are all 0 stays 0 (no division by zero).

Memory: ||S_i - S_j||_F^2 = ||S_i||^2 + ||S_j||^2 - 2 <S_i, S_j>_F from the Gram matrix of the
flattened covariances, O(B C^2) memory instead of the O(B^2 C^2) of the pairwise differences
(64 volumes x 192 channels: 9 MB instead of 604 MB); rounding can make it slightly negative, so it
is clamped at 0, and the self-distance is set to exactly 0. kappa = None picks the median heuristic:
the median of the off-diagonal squared distances of the rows computed (so K^spa does not depend on
the scale of the token features).

Across ranks (:class:`SwcaLoss` with ``gather`` on under torch.distributed), as
:class:`~ctvlp.losses.siglip.SigLipLoss`: each rank scores its local images against all gathered
texts; the affinities of its local volumes against every volume / report of the global batch are
built from gathered (detached) means, covariances, report embeddings or labels, so its rows of W
are the single-process W's rows and the mean over ranks of the loss is the single-process loss
(kappa = None: the median is taken over the rank's own rows, an estimate of the global one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ctvlp.losses.base import Loss
from ctvlp.losses.clip import check_pair, check_scalar
from ctvlp.losses.gather import gather_features, is_distributed, rank_offset

VARIANTS = ("soft_targets", "weights")
DEFAULT_VARIANT, DEFAULT_EPS = "soft_targets", 0.1
KNOWLEDGE = ("report_emb", "labels")


def _check_kappa(name: str, kappa: float | None) -> None:
    if kappa is not None and not kappa > 0:
        raise ValueError(f"{name} must be > 0 or None (median heuristic); got {kappa}")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}")


def _variant(variant: str) -> str:
    v = variant.replace("-", "_")
    if v not in VARIANTS:
        raise ValueError(f"unknown SWCA variant {variant!r}; known: {', '.join(VARIANTS)}")
    return v


def _diagonal(b: int, n: int, offset: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, offset + i) of each local row's own column in a (b, n) block."""
    if offset + b > n:
        raise ValueError(f"local rows {b} at offset {offset} do not fit in {n} columns")
    rows = torch.arange(b, device=device)  # (b,)
    return rows, rows + offset


def token_stats(tokens: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked mean (B, C) and population covariance (B, C, C) of each volume's token features
    ``tokens`` (B, N, C) over its valid tokens ``token_mask`` (B, N) bool (None: all valid); detached.
    Padded tokens are ignored whatever they hold. Every volume needs at least one valid token."""
    if tokens.ndim != 3 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be (B, N, C) with B, N >= 1; got {tuple(tokens.shape)}")
    if token_mask is None:
        token_mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    if token_mask.shape != tokens.shape[:2]:
        raise ValueError(f"token_mask must be (B, N) = {tuple(tokens.shape[:2])}; got {tuple(token_mask.shape)}")
    with torch.no_grad():
        valid = token_mask.bool()[..., None]  # (B, N, 1)
        x = torch.where(valid, tokens.detach(), 0.0)  # (B, N, C)
        count = valid.sum(dim=1).to(x.dtype)  # (B, 1)
        if bool((count == 0).any()):
            raise ValueError("every volume needs at least one valid token; token_mask has an all-False row")
        mean = x.sum(dim=1) / count  # (B, C)
        centred = torch.where(valid, x - mean[:, None], 0.0)  # (B, N, C)
        cov = centred.transpose(1, 2) @ centred / count[:, :, None]  # (B, C, C)
    return mean, cov


def _median_off_diagonal(dist: torch.Tensor, offset: int) -> torch.Tensor:
    """Median of the entries of ``dist`` (b, n) other than (i, offset + i); 1 when there are none."""
    b, n = dist.shape
    keep = torch.ones_like(dist, dtype=torch.bool)
    keep[_diagonal(b, n, offset, dist.device)] = False
    values = dist[keep]
    if values.numel() == 0:
        return torch.ones((), dtype=dist.dtype, device=dist.device)
    return values.median().clamp_min(torch.finfo(dist.dtype).tiny)


def spatial_affinity_from_stats(mean: torch.Tensor, cov: torch.Tensor, all_mean: torch.Tensor,
                                all_cov: torch.Tensor, kappa_mu: float | None = None,
                                kappa_s: float | None = None, offset: int = 0) -> torch.Tensor:
    """K^spa between b volumes (``mean`` (b, C), ``cov`` (b, C, C)) and n volumes (``all_mean`` (n, C),
    ``all_cov`` (n, C, C)) whose column ``offset + i`` is volume i itself -> (b, n), detached."""
    if mean.ndim != 2 or cov.shape != (*mean.shape, mean.shape[1]) or all_mean.ndim != 2 \
            or all_mean.shape[1] != mean.shape[1] or all_cov.shape != (*all_mean.shape, mean.shape[1]):
        raise ValueError(f"means (b, C), (n, C) and covariances (b, C, C), (n, C, C) must share C; got "
                         f"{tuple(mean.shape)}, {tuple(all_mean.shape)}, {tuple(cov.shape)}, {tuple(all_cov.shape)}")
    _check_kappa("kappa_mu", kappa_mu)
    _check_kappa("kappa_s", kappa_s)
    with torch.no_grad():
        b, n = mean.shape[0], all_mean.shape[0]
        diag = _diagonal(b, n, offset, mean.device)
        d_mu = (mean[:, None, :] - all_mean[None, :, :]).square().sum(dim=-1)  # (b, n), only (b, n, C) held
        flat, all_flat = cov.flatten(1), all_cov.flatten(1)  # (b, C^2), (n, C^2)
        d_s = flat.square().sum(1)[:, None] + all_flat.square().sum(1)[None, :] - 2 * flat @ all_flat.T  # (b, n)
        d_s = d_s.clamp_min(0.0)
        d_mu[diag], d_s[diag] = 0.0, 0.0
        k_mu = _median_off_diagonal(d_mu, offset) if kappa_mu is None else kappa_mu
        k_s = _median_off_diagonal(d_s, offset) if kappa_s is None else kappa_s
        return torch.exp(-d_mu / k_mu - d_s / k_s)  # (b, n)


def spatial_affinity(tokens: torch.Tensor, token_mask: torch.Tensor | None = None, kappa_mu: float | None = None,
                     kappa_s: float | None = None) -> torch.Tensor:
    """K^spa (B, B) of the volumes' token features ``tokens`` (B, N, C) with valid tokens ``token_mask``
    (B, N) bool: exp(-||mu_i - mu_j||^2 / kappa_mu) exp(-||S_i - S_j||_F^2 / kappa_S); detached.
    ``kappa_*`` None: the median of the off-diagonal squared distances."""
    mean, cov = token_stats(tokens, token_mask)
    return spatial_affinity_from_stats(mean, cov, mean, cov, kappa_mu, kappa_s)


def knowledge_affinity(report_emb: torch.Tensor, all_report_emb: torch.Tensor | None = None) -> torch.Tensor:
    """K^kn (B, B): cosine similarity of a frozen text model's report embeddings ``report_emb`` (B, E)
    (against ``all_report_emb`` (N, E) -> (B, N) when given), negative values set to 0; detached."""
    other = report_emb if all_report_emb is None else all_report_emb
    if report_emb.ndim != 2 or other.ndim != 2 or report_emb.shape[1] != other.shape[1] or report_emb.shape[0] == 0:
        raise ValueError(f"report embeddings must be (B, E) and (N, E) with B >= 1 and the same E; got "
                         f"{tuple(report_emb.shape)}, {tuple(other.shape)}")
    with torch.no_grad():
        a = F.normalize(report_emb.detach(), dim=1)  # (B, E)
        c = F.normalize(other.detach(), dim=1)  # (N, E)
        return (a @ c.T).clamp_min(0.0)  # (B, N)


def label_affinity(labels: torch.Tensor, all_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Shared-label similarity (B, B) of multi-hot abnormality labels ``labels`` (B, L) (bool or {0, 1};
    against ``all_labels`` (N, L) -> (B, N) when given); detached.

    Jaccard index |A_i & A_j| / |A_i | A_j| of the two label sets: 1 only for the same findings, 0 for
    disjoint ones, not inflated by a long vocabulary of shared absences (unlike a Hamming agreement),
    and, unlike cosine, defined for a normal report: two normal reports (no labels) have similarity 1,
    a normal and an abnormal one 0."""
    other = labels if all_labels is None else all_labels
    if labels.ndim != 2 or other.ndim != 2 or labels.shape[1] != other.shape[1] or labels.shape[0] == 0:
        raise ValueError(f"labels must be multi-hot (B, L) and (N, L) with B >= 1 and the same L; got "
                         f"{tuple(labels.shape)}, {tuple(other.shape)}")
    with torch.no_grad():
        dtype = torch.get_default_dtype() if not labels.is_floating_point() else labels.dtype
        a, c = (labels.detach() > 0).to(dtype), (other.detach() > 0).to(dtype)  # (B, L), (N, L)
        shared = a @ c.T  # (B, N)
        union = a.sum(1)[:, None] + c.sum(1)[None, :] - shared  # (B, N)
        return torch.where(union > 0, shared / union.clamp_min(1.0), 1.0)


def affinity_blend(spatial: torch.Tensor | None = None, knowledge: torch.Tensor | None = None,
                   alpha: float = 0.5) -> torch.Tensor:
    """A = clamp(alpha K^spa + (1 - alpha) K^kn, 0, 1) from ``spatial`` and ``knowledge`` (B, N) each,
    detached: the soft targets' affinity (a volume with itself: 1). alpha = 1 needs only ``spatial``,
    alpha = 0 only ``knowledge``."""
    _check_unit("alpha", alpha)
    if alpha > 0 and spatial is None:
        raise ValueError(f"alpha = {alpha} > 0 needs the spatial affinity")
    if alpha < 1 and knowledge is None:
        raise ValueError(f"alpha = {alpha} < 1 needs the knowledge affinity")
    if spatial is not None and knowledge is not None and spatial.shape != knowledge.shape:
        raise ValueError(f"spatial and knowledge affinities must have the same shape; got "
                         f"{tuple(spatial.shape)}, {tuple(knowledge.shape)}")
    with torch.no_grad():
        if alpha == 1:
            blend = spatial.detach()
        elif alpha == 0:
            blend = knowledge.detach()
        else:
            blend = alpha * spatial.detach() + (1 - alpha) * knowledge.detach()  # (B, N)
        if blend.ndim != 2:
            raise ValueError(f"affinities must be (B, N); got {tuple(blend.shape)}")
        return blend.clamp(0.0, 1.0)


def row_normalise(blend: torch.Tensor) -> torch.Tensor:
    """W = D^-1 A: each row of ``blend`` (B, N) divided by its sum (an all-zero row stays 0)."""
    return blend / blend.sum(dim=1, keepdim=True).clamp_min(torch.finfo(blend.dtype).tiny)  # (B, N)


def affinity_weights(spatial: torch.Tensor | None = None, knowledge: torch.Tensor | None = None,
                     alpha: float = 0.5) -> torch.Tensor:
    """W = row_normalise(alpha K^spa + (1 - alpha) K^kn) from ``spatial`` and ``knowledge`` (B, N) each,
    detached; rows sum to 1 (an all-zero row stays 0): the ``weights`` variant's pair weights."""
    return row_normalise(affinity_blend(spatial, knowledge, alpha))


def _soft_part(spatial: torch.Tensor | None, knowledge: torch.Tensor | None, alpha: float,
               variant: str) -> torch.Tensor:
    """The variant's affinity: A for ``soft_targets``, W for ``weights``."""
    blend = affinity_blend(spatial, knowledge, alpha)
    return blend if variant == "soft_targets" else row_normalise(blend)


def local_swca_loss(image_emb: torch.Tensor, all_text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                    logit_bias: torch.Tensor | float, weights: torch.Tensor | None, offset: int,
                    variant: str = DEFAULT_VARIANT, eps: float = DEFAULT_EPS, weight: float = 1.0) -> torch.Tensor:
    """Local images (B, D) against all texts (N, D), image i's positive text ``offset + i``; ``weights``
    (B, N): the variant's affinity (A for ``soft_targets``, W for ``weights``), or None (no soft part:
    SigLIP). Normalised by the local B, as
    :func:`~ctvlp.losses.siglip.local_siglip_loss`."""
    b = image_emb.shape[0]
    logits = logit_scale * image_emb @ all_text_emb.T + logit_bias  # (B, N)
    diag = _diagonal(b, logits.shape[1], offset, logits.device)
    if weights is not None:
        weights = weights.detach().to(logits.dtype)  # (B, N)
    if variant == "weights":
        signs = torch.full_like(logits, -1.0)  # (B, N)
        signs[diag] = 1.0
        terms = F.logsigmoid(signs * logits)  # (B, N)
        if weights is not None:
            terms = (1.0 + weight * weights) * terms
        return -terms.sum() / b
    targets = torch.zeros_like(logits)  # (B, N)
    targets[diag] = 1.0
    if weights is not None:
        targets = (1.0 - eps) * targets + eps * weights
    terms = targets * F.logsigmoid(logits) + (1.0 - targets) * F.logsigmoid(-logits)  # (B, N)
    return -terms.sum() / b


def _check_options(variant: str, eps: float, weight: float) -> str:
    _check_unit("eps", eps)
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0; got {weight}")
    return _variant(variant)


def swca_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
              logit_bias: torch.Tensor | float, affinity: torch.Tensor | None = None, *,
              spatial: torch.Tensor | None = None, knowledge: torch.Tensor | None = None, alpha: float = 0.5,
              variant: str = DEFAULT_VARIANT, eps: float = DEFAULT_EPS, weight: float = 1.0) -> torch.Tensor:
    """SWCA on one process: ``image_emb`` and ``text_emb`` (B, D) L2-normalised, row i of each a matching
    pair; ``logit_scale`` t (already exponentiated) and ``logit_bias`` b scalars. The soft part comes
    either ready as ``affinity`` (B, B), used as given (A for ``soft_targets``, W for ``weights``), or
    from the affinity matrices ``spatial`` K^spa and/or ``knowledge`` K^kn (B, B) blended by ``alpha``
    (:func:`affinity_blend`, row-normalised for ``weights``); with neither the loss is siglip_loss.
    ``variant`` "soft_targets" (strength ``eps``, the default) or "weights" (strength ``weight``). No
    gradient flows into the affinities. Returns a scalar."""
    check_pair(image_emb, text_emb)
    check_scalar("logit_scale", logit_scale)
    check_scalar("logit_bias", logit_bias)
    variant = _check_options(variant, eps, weight)
    b = image_emb.shape[0]
    if affinity is not None and (spatial is not None or knowledge is not None):
        raise ValueError("pass either a ready affinity W or the spatial / knowledge affinities, not both")
    if affinity is None and (spatial is not None or knowledge is not None):
        affinity = _soft_part(spatial, knowledge, alpha, variant)
    if affinity is not None and affinity.shape != (b, b):
        raise ValueError(f"affinity must be (B, B) = {(b, b)}; got {tuple(affinity.shape)}")
    return local_swca_loss(image_emb, text_emb, logit_scale, logit_bias, affinity, 0, variant, eps, weight)


def _rows(name: str, x: torch.Tensor | None, b: int) -> torch.Tensor:
    if x is None:
        raise ValueError(f"SwcaLoss needs {name} for this configuration; got None")
    if x.ndim < 2 or x.shape[0] != b:
        raise ValueError(f"{name} must have the batch size {b} of the embeddings first; got {tuple(x.shape)}")
    return x


class SwcaLoss(Loss):
    """SWCA with the affinities built from the batch: K^spa from the vision tower's ``tokens`` (B, N, C)
    and ``token_mask`` (B, N) (needed when alpha > 0), K^kn from ``report_emb`` (B, E) of a frozen text
    model (``knowledge="report_emb"``) or multi-hot ``labels`` (B, L) (``knowledge="labels"``), needed
    when alpha < 1.

    Over the global batch when ``gather`` is on and torch.distributed runs, as :class:`SigLipLoss`:
    texts are gathered with gradients; the local volumes' means and covariances and the reports'
    embeddings or labels are gathered detached, so each rank holds its rows of the global W and the
    mean over ranks equals :func:`swca_loss` on the global batch (with fixed kappas).
    """

    reads = ("pairs",)
    data = ("report text",)
    contrastive = True
    uses_logit_bias = True

    @classmethod
    def needs(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """Report text; labels too with ``knowledge: labels`` (K^kn from the batch's labels)."""
        return cls.data + ("labels",) * (options.get("knowledge") == "labels")

    @classmethod
    def batch_inputs(cls, options: Mapping[str, Any]) -> tuple[str, ...]:
        """The batch's multi-hot ``labels`` with ``knowledge: labels``."""
        return ("labels",) * (options.get("knowledge") == "labels")

    def __init__(self, alpha: float = 0.5, variant: str = DEFAULT_VARIANT, eps: float = DEFAULT_EPS,
                 weight: float = 1.0, kappa_mu: float | None = None, kappa_s: float | None = None,
                 knowledge: str = "report_emb", gather: bool = True):
        super().__init__()
        _check_unit("alpha", alpha)
        _check_kappa("kappa_mu", kappa_mu)
        _check_kappa("kappa_s", kappa_s)
        if knowledge not in KNOWLEDGE:
            raise ValueError(f"unknown knowledge source {knowledge!r}; known: {', '.join(KNOWLEDGE)}")
        self.variant = _check_options(variant, eps, weight)
        self.alpha, self.eps, self.weight = alpha, eps, weight
        self.kappa_mu, self.kappa_s, self.knowledge, self.gather = kappa_mu, kappa_s, knowledge, gather

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, variant={self.variant!r}, eps={self.eps}, weight={self.weight}, "
                f"kappa_mu={self.kappa_mu}, kappa_s={self.kappa_s}, knowledge={self.knowledge!r}, gather={self.gather}")

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float, tokens: torch.Tensor | None = None,
                token_mask: torch.Tensor | None = None, report_emb: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **unused) -> torch.Tensor:
        if self.gather and is_distributed():
            return self.rows_loss(image_emb, text_emb, logit_scale, logit_bias, tokens, token_mask, report_emb,
                                  labels, gather=lambda x: gather_features(x), offset=rank_offset(image_emb.shape[0]))
        return self.rows_loss(image_emb, text_emb, logit_scale, logit_bias, tokens, token_mask, report_emb, labels,
                              gather=lambda x: x, offset=0)

    def rows_loss(self, image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                  logit_bias: torch.Tensor | float, tokens: torch.Tensor | None, token_mask: torch.Tensor | None,
                  report_emb: torch.Tensor | None, labels: torch.Tensor | None,
                  gather: Callable[[torch.Tensor], torch.Tensor], offset: int) -> torch.Tensor:
        """The loss of the local rows against the batch ``gather`` returns (rank order; the local rows at
        ``offset``): the identity on one process, :func:`gather_features` across ranks."""
        check_pair(image_emb, text_emb)
        check_scalar("logit_scale", logit_scale)
        check_scalar("logit_bias", logit_bias)
        b = image_emb.shape[0]
        spatial = knowledge = None
        if self.alpha > 0:
            mean, cov = token_stats(_rows("tokens", tokens, b), token_mask)  # (B, C), (B, C, C)
            spatial = spatial_affinity_from_stats(mean, cov, gather(mean), gather(cov), self.kappa_mu,
                                                  self.kappa_s, offset)  # (B, N)
        if self.alpha < 1:
            if self.knowledge == "report_emb":
                r = _rows("report_emb", report_emb, b).detach()
                knowledge = knowledge_affinity(r, gather(r))  # (B, N)
            else:
                y = (_rows("labels", labels, b).detach() > 0).to(image_emb.dtype)
                knowledge = label_affinity(y, gather(y))  # (B, N)
        weights = _soft_part(spatial, knowledge, self.alpha, self.variant)  # (B, N): A or W
        return local_swca_loss(image_emb, gather(text_emb), logit_scale, logit_bias, weights, offset,
                               self.variant, self.eps, self.weight)
