"""Optimiser-step benchmark: torch's Muon (bf16 Newton-Schulz) vs ctvlp's float32 path vs AdamW.

    python benchmarks/optim_step.py [--widths 192 384] [--depth 4] [--repeats 7] [--threads 1]
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/optim_step.py   # what a CPU without native bf16 sees

Parameter set: the 2-D matrices of a ViT's blocks (per block qkv (3C, C), proj (C, C), fc1 (4C, C),
fc2 (C, 4C)), depth 4, for each width C. One step = ``opt.step()`` with fixed random gradients; the
median over ``--repeats`` timed steps after one warm-up step. The three optimisers run in the same
process, one after the other, on identical parameters and gradients.

Results: benchmarks/results/optim_step-<date>[-isa-<ONEDNN_MAX_CPU_ISA>].json. Ratios are measured within one run; absolute
times depend on the machine. Whether bf16 is fast depends on the CPU: with AVX512-BF16/AMX oneDNN's
bf16 matmuls beat float32; without them (AVX2; or oneDNN capped with ONEDNN_MAX_CPU_ISA=AVX2) they are
an order of magnitude slower. ``auto_ns_dtype`` records what ``OptimConfig(ns_dtype='auto')`` picks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from machine import machine

from ctvlp.train.optim import Muon, cpu_has_native_bf16, resolve_ns_dtype

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    return machine(torch_threads=torch.get_num_threads(), native_bf16=cpu_has_native_bf16(),
                   ONEDNN_MAX_CPU_ISA=os.environ.get("ONEDNN_MAX_CPU_ISA"))


def vit_matrices(width: int, depth: int, mlp_ratio: int = 4) -> list[nn.Parameter]:
    """The block matrices of a ViT with random gradients attached."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(3 * width, width), (width, width), (mlp_ratio * width, width), (width, mlp_ratio * width)] * depth
    params = [nn.Parameter(torch.randn(shape, generator=gen) * 0.02) for shape in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    return params


def step_seconds(make_opt, width: int, depth: int, repeats: int) -> float:
    """Median seconds of one ``step()`` (after one warm-up step that also creates the optimiser state)."""
    opt = make_opt(vit_matrices(width, depth))
    opt.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


OPTIMISERS = {
    "muon_torch_bf16": lambda ps: torch.optim.Muon(ps, lr=0.02),
    "muon_fp32": lambda ps: Muon(ps, lr=0.02, ns_dtype=torch.float32),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, betas=(0.9, 0.95)),
}


def bench(width: int, depth: int, repeats: int) -> dict:
    seconds = {name: step_seconds(make, width, depth, repeats) for name, make in OPTIMISERS.items()}
    n_params = sum(p.numel() for p in vit_matrices(width, depth))
    return {"width": width, "depth": depth, "matrices": 4 * depth, "parameters": n_params,
            **{f"{name}_ms": 1e3 * s for name, s in seconds.items()},
            "bf16_over_fp32": seconds["muon_torch_bf16"] / seconds["muon_fp32"],
            "fp32_over_adamw": seconds["muon_fp32"] / seconds["adamw"]}


def save(results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["date"].replace(":", "").replace("-", "")[:13]
    isa = results["machine"]["ONEDNN_MAX_CPU_ISA"]
    path = RESULTS / (f"optim_step-{stamp}" + (f"-isa-{isa.lower()}" if isa else "") + ".json")
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[192, 384])
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_info(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
               "repeats": args.repeats, "auto_ns_dtype": str(resolve_ns_dtype("auto", torch.device("cpu"))),
               "runs": []}
    for width in args.widths:
        run = bench(width, args.depth, args.repeats)
        results["runs"].append(run)
        print(f"width {width:4d} depth {args.depth}: torch Muon (bf16 NS) {run['muon_torch_bf16_ms']:8.1f} ms | "
              f"fp32 NS {run['muon_fp32_ms']:7.1f} ms | AdamW {run['adamw_ms']:6.1f} ms | "
              f"bf16/fp32 {run['bf16_over_fp32']:.1f}x | fp32/AdamW {run['fp32_over_adamw']:.1f}x")
    print(f"saved {save(results)}")


if __name__ == "__main__":
    main()
