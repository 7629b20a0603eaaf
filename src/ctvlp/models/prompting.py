"""A model's prompts: texts encoded by its text tower, pooled per label, and scored against image embeddings.

Shared by evaluation (:mod:`ctvlp.eval.run`, :mod:`ctvlp.eval.suite`, :mod:`ctvlp.eval.organs`) and inference
(:class:`ctvlp.inference.model.CtvlpModel`), so both give one volume the same numbers. The prompt texts
themselves are :mod:`ctvlp.data.prompts`'; ``model`` is any object with ``encode_texts(texts)``, ``scale()``
and ``cfg.embed_dim`` (a :class:`~ctvlp.models.vlp.VisionLanguageModel`).
"""

from __future__ import annotations

import numpy as np
import torch

from ctvlp.data.prompt_names import LABEL_HEAD
from ctvlp.data.prompts import build_prompts


@torch.no_grad()
def encode_texts(model, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(T, D) normalised text embeddings, in batches."""
    out = [model.encode_texts(texts[start:start + batch_size]).float().cpu()
           for start in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.cfg.embed_dim)


def zero_shot_scores(image_emb: torch.Tensor | np.ndarray, pos_emb: torch.Tensor | np.ndarray,
                     neg_emb: torch.Tensor | np.ndarray, logit_scale: float | torch.Tensor = 1.0,
                     ) -> torch.Tensor | np.ndarray:
    """(N, L) probability that label l is present in volume n.

    p_nl = exp(t cos(v_n, u+_l)) / (exp(t cos(v_n, u+_l)) + exp(t cos(v_n, u-_l))), the softmax over
    the label's (positive, negative) prompt pair (CT-CLIP, COLIPRI). ``image_emb`` (N, D), ``pos_emb``
    and ``neg_emb`` (L, D), any scale (they are L2-normalised here); ``logit_scale`` is t itself (the
    exponentiated learnt scale), not its log. One float32 matmul for all volumes and prompts; the
    softmax runs in float64 so that t = 100 does not round confident scores to exactly 1 (ties
    that would blunt AUROC). Returns a float64 tensor when ``image_emb`` is a tensor, else a
    float64 numpy array.
    """
    as_numpy = not isinstance(image_emb, torch.Tensor)
    v, pos, neg = (torch.as_tensor(x).float() for x in (image_emb, pos_emb, neg_emb))
    if v.ndim != 2 or pos.ndim != 2 or pos.shape != neg.shape or pos.shape[1] != v.shape[1]:
        raise ValueError(f"need image (N, D), pos and neg (L, D) with one D, got {tuple(v.shape)}, "
                         f"{tuple(pos.shape)}, {tuple(neg.shape)}")
    v = torch.nn.functional.normalize(v, dim=-1)
    prompts = torch.nn.functional.normalize(torch.stack([pos, neg], dim=1), dim=-1)  # (L, 2, D)
    sims = v @ prompts.flatten(0, 1).T  # (N, 2L)
    logits = torch.as_tensor(logit_scale).double() * sims.double().view(v.shape[0], -1, 2)  # (N, L, 2)
    prob = logits.softmax(dim=-1)[..., 0]  # (N, L)
    return prob.numpy() if as_numpy else prob


@torch.no_grad()
def prompt_scorer(model, labels: list[str], style, prompts=None):
    """A function image embeddings (N, D) -> (N, L) zero-shot probabilities of ``labels``: every
    prompt of ``style`` (a name in ``prompts``, default the packaged set) encoded once, pooled per label;
    for ``style`` :data:`~ctvlp.data.prompt_names.LABEL_HEAD` the model's label head, sigmoid(t cos(v, u_k) + b)
    (ValueError when the model has none)."""
    if style == LABEL_HEAD:
        if not getattr(model.cfg, "label_prompts", False):
            raise ValueError(f"prompt style {LABEL_HEAD!r} scores with the model's label head, and this model has "
                             "none (model.label_prompts: recipe uniferum); use a prompt-pair style such as 'ctclip'")
        device = model.logit_scale.device

        @torch.no_grad()
        def label_head(image_emb: torch.Tensor) -> np.ndarray:
            return torch.sigmoid(model.label_logits(image_emb.to(device), labels)).float().cpu().numpy()

        return label_head
    texts, index = build_prompts(labels, style, prompts)
    pos, neg = index.pool(encode_texts(model, texts))
    scale = float(model.scale())
    return lambda image_emb: zero_shot_scores(image_emb, pos, neg, scale).numpy()
