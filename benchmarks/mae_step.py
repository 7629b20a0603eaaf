"""MAE training step vs a full-volume training step of the vision tower (COLIPRI's image-only batches).

    python benchmarks/mae_step.py [--repeats 5] [--threads 1] [--sizes demo base]

Per size, on one fixed batch, forward + backward of
  * ``full``: ``forward_features`` on every token, mean-pool, a dummy loss (mean square of the pooled
    vector), backward (what an image-report batch costs the tower alone);
  * ``mae``: ``masked_autoencoder_step`` at 75 % masking (``forward_visible`` on the N/4 kept tokens,
    ``MaeDecoder`` on all N tokens) + ``MaeLoss``, backward through decoder and encoder;
  * ``embed``: the patch embedding alone (``patch_embed`` on the full volume, backward of a dummy sum).
The two steps alternate within each repeat (so load changes on the shared machine hit both alike) and
medians are reported; goal: ``mae / full <= 0.45``.

Patch embedding / conv stem: ``forward_visible`` patch-embeds the WHOLE volume and masks afterwards, so
the stem (``stem="conv"``: two 3x3x3 convs at half resolution, the second stem_width -> stem_width) and
the patch conv run on every voxel, masked or not, in both steps; only the transformer blocks shrink to
N/4 tokens. Applying the stem after masking would need each kept patch cropped with a one-voxel halo
(the 3x3x3 kernels see neighbouring patches), i.e. a gather of overlapping crops; not done. The
``embed`` row gives what this costs: ``embed / full`` is the floor of the ratio the MAE step can reach,
and ``mae_ratio_if_embed_scaled`` estimates the ratio had the embedding cost only its visible quarter
(mae - 0.75 * embed) / full. The demo tower has a conv stem; the base tower has a plain patch conv.

Sizes: ``demo``: the demo recipe's tower (192 wide, 4 blocks, 3 heads, 4 x 8 x 8 patches, RoPE, conv
stem) on 32 x 1 x 16 x 32 x 40 (80 tokens per volume, 20 kept), decoder 96 wide x 2 blocks;
``base``: ViT-base (792 wide, 12 blocks, 12 heads, 16^3 patches, RoPE, no stem) on 4 x 1 x 64 x 128 x
128 (256 tokens per volume, 64 kept), decoder 384 wide x 4 blocks (MAE's proportions: about 8 % of the
encoder's per-token compute); ``colipri-cohort``: the tower and MAE decoder of COLIPRI's cohort variant
(what `ctvlp compare` trains: Primus-M's SwiGLU, LayerScale and partial RoPE at the demo's size, no stem)
on the demo's batch; ``colipri``: the recipe's own Primus-M (864 wide, 16 blocks, 8^3 patches) and MAE decoder
(256 wide x 2 blocks) on one 64 x 96 x 96 crop (1,152 tokens, 288 kept; the recipe's 160^3 would be 8,000).

Threads: 1 by default. The 2-core machine is shared with a training job (load 4-6); with 2 torch
threads every parallel op waits for the second thread to be scheduled (a profile showed element-wise
ops on 50k floats taking ~8 ms each), which swamps the MAE step's many small ops: a 2-thread run
measured mae/full 0.73 (demo) and 0.81 (base), with single steps 5x slower than with 1 thread. One
thread measures the arithmetic, which is what the ratio is about.

Measured (2026-11-23, 1 thread, 5 repeats, AMD EPYC 2 cores at load ~5):
  demo: full 0.73 s, MAE 0.40 s -> 0.55 (goal missed); the conv stem + patch conv on the full volume
        take 0.19 s = 0.27 of the full step and half of the MAE step; embedding only the visible
        quarter would give ~0.35.
  base: full 7.8 s, MAE 3.1 s -> 0.40 (goal met); the plain patch conv is 0.03 of the full step.
  colipri (1 thread, 3 repeats, quiet machine): full 18.7 s, MAE 4.6 s -> 0.24 (goal met).

Results: benchmarks/results/mae_step-<date>.json (with the machine and the thread count).
"""

from __future__ import annotations

import argparse
import statistics

import torch

from machine import median_seconds, save_result

from ctvlp.losses.mae import MaeLoss
from ctvlp.models.mae import MaeDecoder, MaeDecoderConfig, masked_autoencoder_step
from ctvlp.models.vit3d import VisionTransformer3d, vit_config
from ctvlp.recipes import get_recipe
from ctvlp.recipes.cohort import cohort_variant

SIZES = {
    "demo": dict(vit=vit_config("small", width=192, depth=4, heads=3, patch=(4, 8, 8), pos="rope", stem="conv"),
                 decoder=MaeDecoderConfig(width=96, depth=2, heads=3), shape=(32, 1, 16, 32, 40)),
    "base": dict(vit=vit_config("base", patch=(16, 16, 16), pos="rope"),
                 decoder=MaeDecoderConfig(width=384, depth=4, heads=12), shape=(4, 1, 64, 128, 128)),
}
SIZES["colipri-cohort"] = dict(vit=cohort_variant(get_recipe("colipri")).model.vision,
                               decoder=cohort_variant(get_recipe("colipri")).model.mae, shape=(32, 1, 16, 32, 40))
SIZES["colipri"] = dict(vit=get_recipe("colipri").model.vision, decoder=get_recipe("colipri").model.mae,
                        shape=(1, 1, 64, 96, 96))
RATIO = 0.75
GOAL = 0.45


def full_step(model: VisionTransformer3d, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    tokens, _, _ = model.forward_features(x)  # (B, N, C)
    tokens.mean(dim=1).pow(2).mean().backward()  # mean-pool + a dummy loss


def mae_step(model: VisionTransformer3d, decoder: MaeDecoder, x: torch.Tensor, loss: MaeLoss, seed: int) -> None:
    model.zero_grad(set_to_none=True)
    decoder.zero_grad(set_to_none=True)
    out = masked_autoencoder_step(model, decoder, x, RATIO, torch.Generator().manual_seed(seed))
    loss(**out).backward()


def embed_step(model: VisionTransformer3d, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model.patch_embed(x).sum().backward()


def bench(name: str, repeats: int) -> dict:
    spec = SIZES[name]
    torch.manual_seed(0)
    model = VisionTransformer3d(spec["vit"]).train()
    decoder = MaeDecoder.for_tower(spec["decoder"], model).train()
    x = torch.rand(spec["shape"], generator=torch.Generator().manual_seed(0)) * 2 - 1
    loss = MaeLoss()
    full_step(model, x), mae_step(model, decoder, x, loss, 0), embed_step(model, x)  # warm-up
    times = {"full": [], "mae": [], "embed": []}
    for r in range(repeats):  # interleaved: the machine is shared
        times["full"].append(median_seconds(lambda: full_step(model, x), 1))
        times["mae"].append(median_seconds(lambda: mae_step(model, decoder, x, loss, r + 1), 1))
        times["embed"].append(median_seconds(lambda: embed_step(model, x), 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = model.forward_features(x[:1])[0].shape[1]
    cfg, dcfg = spec["vit"], spec["decoder"]
    return {"size": name, "batch_shape": list(spec["shape"]), "tokens": n, "kept_tokens": max(1, int(n * (1 - RATIO))),
            "vit": {"width": cfg.width, "depth": cfg.depth, "heads": cfg.heads, "patch": list(cfg.patch),
                    "pos": cfg.pos, "stem": cfg.stem, "stem_width": cfg.stem_width},
            "decoder": {"width": dcfg.width, "depth": dcfg.depth, "heads": dcfg.heads},
            "encoder_parameters": sum(p.numel() for p in model.parameters()),
            "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
            "full_seconds": med["full"], "mae_seconds": med["mae"], "embed_seconds": med["embed"],
            "mae_over_full": med["mae"] / med["full"], "embed_over_full": med["embed"] / med["full"],
            "mae_ratio_if_embed_scaled": (med["mae"] - RATIO * med["embed"]) / med["full"],
            "goal_met": med["mae"] / med["full"] <= GOAL, "all_seconds": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    rows = [bench(name, args.repeats) for name in args.sizes]
    print(f"{'size':14} {'tokens':>6} {'kept':>5} {'full s':>7} {'mae s':>7} {'embed s':>7} {'mae/full':>8} "
          f"{'embed/full':>10} {'mae/full if embed scaled':>24}")
    for r in rows:
        print(f"{r['size']:14} {r['tokens']:>6} {r['kept_tokens']:>5} {r['full_seconds']:>7.3f} {r['mae_seconds']:>7.3f} "
              f"{r['embed_seconds']:>7.3f} {r['mae_over_full']:>8.2f} {r['embed_over_full']:>10.2f} "
              f"{r['mae_ratio_if_embed_scaled']:>24.2f}")
    print(f"goal: mae/full <= {GOAL}")
    save_result("mae_step", {"mask_ratio": RATIO, "goal_mae_over_full": GOAL, "repeats": args.repeats,
                             "rows": rows}, tag=None if args.sizes == list(SIZES) else "-".join(args.sizes))


if __name__ == "__main__":
    main()
