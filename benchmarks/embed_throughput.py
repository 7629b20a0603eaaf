"""Throughput of ``ctvlp embed``'s path (DataLoader reading + preprocessing, batched encoder) vs its workers.

    python benchmarks/embed_throughput.py [--n 16] [--shape 256 256 120] [--repeats 3] [--workers 0 2]

Input: ``--n`` synthetic full-resolution chest-like volumes (``--shape``, int16, 0.8 x 0.8 x 2.5 mm, an
elliptic body at 40 HU with two lungs at -850 HU in -1000 HU air, Gaussian noise of 20 HU so that gzip
compresses as on real scans) written as .nii.gz into a temp folder. Model: the ``demo`` recipe (not
debug), randomly initialised, saved as a checkpoint (``zeroshot_e2e.demo_checkpoint``). Measured:
volumes per second of :func:`ctvlp.inference.batch.embed_files` (everything ``ctvlp embed`` does
except writing the Parquet file), median of ``--repeats`` runs for each worker count.

Goal: 2 workers >= 1.6 x 0 workers (reading and preprocessing dominate on CPU and run in parallel).
Results: benchmarks/results/embed_throughput-<date>.json (with the machine's load average at the end:
other processes on the cores distort the ratio).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from machine import median_seconds, save_result
from zeroshot_e2e import demo_checkpoint

import ctvlp
from ctvlp.inference.batch import embed_files

SPACING = (0.8, 0.8, 2.5)


def synthetic_ct(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """(X, Y, Z) int16 HU: air, an elliptic body, two lungs, noise."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")  # (X, Y)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    lungs = ((np.abs(x) - 0.4) / 0.28) ** 2 + (y / 0.45) ** 2 < 1
    plane = np.where(body, np.where(lungs, -850.0, 40.0), -1000.0)  # (X, Y)
    volume = np.repeat(plane[:, :, None], shape[2], axis=2) + rng.normal(0, 20, shape)  # (X, Y, Z)
    return np.rint(volume).astype(np.int16)


def write_volumes(folder: Path, n: int, shape: tuple[int, int, int]) -> list[Path]:
    affine = np.diag([*SPACING, 1.0])
    paths = []
    for i in range(n):
        path = folder / f"ct_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(synthetic_ct(shape, i), affine), str(path))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16, help="volumes (default %(default)s)")
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 256, 120], help="voxels (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count, median (default %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts (default %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ct").mkdir()
        paths = write_volumes(work / "ct", args.n, tuple(args.shape))
        model = ctvlp.load_model(demo_checkpoint(work / "checkpoints"))
        seconds = {w: median_seconds(lambda w=w: embed_files(model, paths, workers=w), args.repeats)
                   for w in args.workers}
    rate = {w: args.n / s for w, s in seconds.items()}
    for w in args.workers:
        print(f"workers {w}: {seconds[w]:.2f} s for {args.n} volumes = {rate[w]:.2f} volumes/s")
    base = args.workers[0]
    speedup = {w: rate[w] / rate[base] for w in args.workers}
    print("speed-up vs workers " + str(base) + ": " + ", ".join(f"{w}: {s:.2f}x" for w, s in speedup.items())
          + "  (goal: 2 workers >= 1.6x 0 workers)")
    save_result("embed_throughput", {"goal": 1.6, "n": args.n, "shape": args.shape, "repeats": args.repeats,
                                     "seconds": {str(w): s for w, s in seconds.items()},
                                     "volumes_per_second": {str(w): r for w, r in rate.items()},
                                     "speedup": {str(w): s for w, s in speedup.items()},
                                     "load_average_1_5_15min": list(os.getloadavg())})


if __name__ == "__main__":
    main()
