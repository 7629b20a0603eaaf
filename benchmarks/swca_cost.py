"""SWCA cost benchmark: what the soft-weighted loss adds to a SigLIP training step.

    python benchmarks/swca_cost.py [--repeats 7] [--loss-repeats 30]

At batch 64, embedding dim 256, vision tokens (64, 80, 192) and 768-wide frozen report embeddings:

* ``siglip_loss``: forward + backward of ``siglip_loss`` on the embeddings;
* ``swca_loss``: forward + backward of ``SwcaLoss`` (alpha 0.5, knowledge from report embeddings,
  median-heuristic kappas), *including* the affinities: token means and covariances, the spatial
  kernel through the Gram identity, the report cosines, W;
* ``siglip_step`` / ``swca_step``: one step of a small 3D ViT (width 192, 4 blocks, 3 heads, 4 x 8 x 8
  patches, RoPE, conv stem) on (64, 1, 16, 32, 40) -> 80 tokens, mean-pooled, a linear projection to
  256, L2-normalised, then the loss against fixed text embeddings; forward + backward. The text
  tower is left out (it would only make the relative cost smaller).

Goal: SWCA adds <= 15 % to a SigLIP step. Reported: ``(siglip_step + (swca_loss - siglip_loss)) /
siglip_step`` (the step plus the loss's extra time) and the directly timed ``swca_step / siglip_step``.
The two variants of each pair are timed alternately (medians over repeats) so the shared machine's
load hits both alike. Results: benchmarks/results/swca_cost-<date>.json.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from machine import median_seconds, save_result

from ctvlp.losses.siglip import siglip_loss
from ctvlp.losses.swca import SwcaLoss
from ctvlp.models.vit3d import create_vision_tower, vit_config

B, EMBED, TOKENS, WIDTH, REPORT = 64, 256, 80, 192, 768
VOLUME = (B, 1, 16, 32, 40)


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, the functions called in turn ``repeats`` times (one warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(median_seconds(fn, 1))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="ViT steps per variant")
    parser.add_argument("--loss-repeats", type=int, default=30, help="loss fwd + bwd per variant")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    img = F.normalize(torch.randn(B, EMBED, generator=g), dim=1).requires_grad_()
    txt = F.normalize(torch.randn(B, EMBED, generator=g), dim=1).requires_grad_()
    tokens = torch.randn(B, TOKENS, WIDTH, generator=g)
    token_mask = torch.ones(B, TOKENS, dtype=torch.bool)
    token_mask[B // 2:, 60:] = False  # half the batch padded, as a ragged batch would be
    report = torch.randn(B, REPORT, generator=g) + 0.3
    swca = SwcaLoss(alpha=0.5, variant="weights", knowledge="report_emb")

    def siglip_only() -> None:
        siglip_loss(img, txt, scale, bias).backward()

    def swca_only() -> None:
        swca(image_emb=img, text_emb=txt, logit_scale=scale, logit_bias=bias, tokens=tokens,
             token_mask=token_mask, report_emb=report).backward()

    torch.manual_seed(0)
    tower = create_vision_tower(vit_config("small", width=WIDTH, depth=4, heads=3, patch=(4, 8, 8), pos="rope",
                                           stem="conv"))
    proj = nn.Linear(WIDTH, EMBED)
    volume = torch.randn(*VOLUME, generator=g)
    text = F.normalize(torch.randn(B, EMBED, generator=g), dim=1)

    def step(loss: str) -> None:
        tower.zero_grad(set_to_none=True)
        proj.zero_grad(set_to_none=True)
        out = tower(volume)
        emb = F.normalize(proj(out["pooled"]), dim=1)
        if loss == "siglip":
            value = siglip_loss(emb, text, scale, bias)
        else:
            value = swca(image_emb=emb, text_emb=text, logit_scale=scale, logit_bias=bias, tokens=out["tokens"],
                         token_mask=out["token_mask"], report_emb=report)
        value.backward()

    assert tower(volume[:1])["tokens"].shape[1] == TOKENS
    losses = alternate({"siglip_loss": siglip_only, "swca_loss": swca_only}, args.loss_repeats)
    steps = alternate({"siglip_step": lambda: step("siglip"), "swca_step": lambda: step("swca")}, args.repeats)
    extra = losses["swca_loss"] - losses["siglip_loss"]
    row = {"batch": B, "embed_dim": EMBED, "tokens": [B, TOKENS, WIDTH], "report_dim": REPORT,
           "volume": list(VOLUME), "vit": "width 192, depth 4, heads 3, patch 4x8x8, rope, conv stem",
           "repeats": args.repeats, "loss_repeats": args.loss_repeats,
           **{f"{k}_seconds": v for k, v in {**losses, **steps}.items()},
           "swca_over_siglip_loss": losses["swca_loss"] / losses["siglip_loss"],
           "step_ratio": (steps["siglip_step"] + extra) / steps["siglip_step"],
           "step_ratio_direct": steps["swca_step"] / steps["siglip_step"]}
    print(f"loss fwd+bwd: siglip {1e3 * losses['siglip_loss']:.2f} ms, swca (with affinities) "
          f"{1e3 * losses['swca_loss']:.2f} ms ({row['swca_over_siglip_loss']:.1f}x)")
    print(f"ViT step fwd+bwd: siglip {1e3 * steps['siglip_step']:.0f} ms, swca {1e3 * steps['swca_step']:.0f} ms")
    print(f"(siglip step + swca extra) / siglip step = {row['step_ratio']:.3f} (goal <= 1.15); "
          f"direct swca step / siglip step = {row['step_ratio_direct']:.3f}")
    save_result("swca_cost", {"goal": 1.15, **row})


if __name__ == "__main__":
    main()
