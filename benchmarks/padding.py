"""Padding waste of length-bucketed batches on a CT-RATE-like slice-count mix, against pad-to-max.

    python benchmarks/padding.py [--volumes 20000] [--batch 32] [--pz 16] [--z-spacing 1.5]

CT-RATE-like mix: slice spacing drawn from 0.75-5 mm, 100-600 slices per volume; resampled to
``--z-spacing`` mm along z (as `ctvlp prepare` does), then rounded up to whole z-patches of ``--pz``
slices (the tokens a ViT processes). Waste = padded tokens / processed tokens, for random batches
padded to their deepest member, for batches padded to the dataset's maximum, and for
``LengthBucketBatchSampler`` (pool of 1, 4 and 16 batches). Goal: <= 10 % with bucketing.
Results: benchmarks/results/padding-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import numpy as np
from machine import machine

from ctvlp.data.loader import LengthBucketBatchSampler

RESULTS = Path(__file__).resolve().parent / "results"


def ctrate_like_depths(n: int, z_spacing: float, pz: int, seed: int = 0) -> np.ndarray:
    """(n,) z-patches per volume after resampling to ``z_spacing`` mm."""
    rng = np.random.default_rng(seed)
    spacing = rng.choice([0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0], size=n)
    slices = rng.integers(100, 601, size=n)
    resampled = np.ceil(slices * spacing / z_spacing)
    return np.ceil(resampled / pz).astype(np.int64)


def waste(batches: list[list[int]], depths: np.ndarray, pad_to: int | None = None) -> float:
    real = sum(depths[b].sum() for b in batches)
    processed = sum(len(b) * (pad_to or depths[b].max()) for b in batches)
    return float(1 - real / processed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--pz", type=int, default=16)
    parser.add_argument("--z-spacing", type=float, default=1.5)
    args = parser.parse_args()
    depths = ctrate_like_depths(args.volumes, args.z_spacing, args.pz)
    random = LengthBucketBatchSampler(depths, args.batch, bucket=False).batches()
    out = {"pad_to_max": waste(random, depths, int(depths.max())), "random_batches": waste(random, depths)}
    for pool in (1, 4, 16):
        out[f"bucketed_pool{pool}"] = waste(LengthBucketBatchSampler(depths, args.batch, pool_batches=pool).batches(),
                                            depths)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine(), "args": vars(args),
               "z_patches": {"min": int(depths.min()), "median": float(np.median(depths)), "max": int(depths.max())},
               "padded_token_fraction": out}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"padding-{results['date'][:10]}.json"
    path.write_text(json.dumps(results, indent=2))
    for key, value in out.items():
        print(f"{key:18s} {100 * value:6.2f} % of processed tokens are padding")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
