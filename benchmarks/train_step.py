"""Vision-tower training-step benchmark: achieved FLOP/s as a fraction of this process's fp32 GEMM FLOP/s.

    python benchmarks/train_step.py [--repeats 5] [--sizes demo base]

For each size, one training step of the vision tower alone (forward + backward of the pooled output's
sum, as the contrastive loss would drive it) on a fixed batch; FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention; forward and backward)
and divided by the median step time. The reference is the best fp32 GEMM rate this process reaches on
square matrices (``torch.mm``, 1024-4096), measured in the same run, so the ratio does not depend on
how busy the shared machine is between runs. The optimiser's step (Muon on the blocks' matrices +
AdamW on the rest, ``ns_dtype='auto'``) is timed on the same model and reported as a share of the
forward + backward time.

Sizes: ``demo`` is the demo recipe's tower and batch (its channels, chunk depth and size);
``base`` is ViT-base (768 wide, 12 blocks) on 2 x 1 x 64 x 128 x 128 with 16^3 patches (256 tokens).

GPU plan (the same code; nothing here is CPU-specific):
  * bf16 autocast (the trainer's ``autocast`` on CUDA), fp32 master weights and optimiser state;
  * attention through ``F.scaled_dot_product_attention`` -> flash / memory-efficient kernels (no
    explicit mask when a batch has no padding, so the flash path is taken);
  * ``torch.compile`` of the blocks to fuse LayerNorm / GELU / RoPE element-wise work;
  * Muon's Newton-Schulz in bf16 (torch's default; ``ns_dtype='auto'`` picks it on CUDA);
  * gradient checkpointing (``TrainConfig.grad_checkpointing``) for long volumes, DDP across GPUs.

Results: benchmarks/results/train_step-<date>.json (with the machine).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from machine import median_seconds, save_result

from ctvlp.models.vit3d import VisionTransformer3d, vit_config
from ctvlp.recipes import get_recipe
from ctvlp.train.optim import OptimConfig, build_optimizer

def gemm_flops(repeats: int) -> dict:
    """Best fp32 ``torch.mm`` FLOP/s over a few square sizes (median of ``repeats`` per size)."""
    out = {}
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        out[n] = 2 * n ** 3 / median_seconds(lambda: torch.mm(a, b), repeats)
    return out


def towers() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    demo = get_recipe("demo")
    d, (h, w) = demo.data.sampler.chunk_depth, demo.data.sampler.size
    base = vit_config("base", patch=(16, 16, 16), pos="rope")
    c = demo.model.vision.in_chans  # the demo reads several CT windows as channels
    return {"demo": (VisionTransformer3d(demo.model.vision), (demo.data.batch_size, c, d, h, w)),
            "base": (VisionTransformer3d(base), (2, 1, 64, 128, 128))}


def train_step(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    model(x)["pooled"].sum().backward()


def bench(name: str, model: torch.nn.Module, shape: tuple[int, ...], repeats: int) -> dict:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        train_step(model, x)
    flops = counter.get_total_flops()
    step = median_seconds(lambda: train_step(model, x), repeats)
    optimizer = build_optimizer(model, OptimConfig(name="muon"))
    optimizer.step()  # creates the state
    opt_step = median_seconds(optimizer.step, repeats)
    tokens = model(x)["tokens"].shape[1]
    return {"size": name, "batch_shape": list(shape), "tokens": tokens,
            "parameters": sum(p.numel() for p in model.parameters()), "gflop_per_step": flops / 1e9,
            "fwd_bwd_seconds": step, "achieved_gflops": flops / step / 1e9,
            "optimizer_seconds": opt_step, "optimizer_over_fwd_bwd": opt_step / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["demo", "base"], choices=["demo", "base"])
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    gemm = gemm_flops(args.repeats)
    all_towers = towers()
    for name in args.sizes:
        model, shape = all_towers[name]
        rows.append(bench(name, model, shape, args.repeats))
    gemm_after = gemm_flops(args.repeats)  # measured again: the machine is shared
    peak = max(max(gemm.values()), max(gemm_after.values()))
    print(f"fp32 GEMM: {peak / 1e9:.0f} GFLOP/s (best of {sorted(gemm)} before and after)")
    print(f"{'size':6} {'tokens':>6} {'GFLOP/step':>10} {'fwd+bwd s':>9} {'GFLOP/s':>8} {'of GEMM':>8} "
          f"{'optim s':>8} {'optim/step':>10}")
    for r in rows:
        r["fraction_of_gemm"] = r["achieved_gflops"] * 1e9 / peak
        print(f"{r['size']:6} {r['tokens']:>6} {r['gflop_per_step']:>10.1f} {r['fwd_bwd_seconds']:>9.3f} "
              f"{r['achieved_gflops']:>8.1f} {r['fraction_of_gemm']:>8.2f} {r['optimizer_seconds']:>8.3f} "
              f"{r['optimizer_over_fwd_bwd']:>10.3f}")
    save_result("train_step", {"gemm_gflops": {str(k): v / 1e9 for k, v in gemm.items()},
                               "gemm_gflops_after": {str(k): v / 1e9 for k, v in gemm_after.items()},
                               "goal_fraction": 0.6, "rows": rows})


if __name__ == "__main__":
    main()
