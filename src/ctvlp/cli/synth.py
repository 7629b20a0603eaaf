"""`ctvlp synth`: write a synthetic chest-CT cohort in CT-RATE's layout (+ RadGenome regions and masks).

    ctvlp synth --out DIR --n N [--seed S] [--difficulty large|easy|medium|hard] [--workers K]
                [--val-fraction F] [--matrix M] [--raw-fraction R] [--visibility V]

Then ``ctvlp manifest ctrate DIR --radgenome DIR/radgenome --out M.parquet`` reads it like CT-RATE.
``--visibility V`` measures, on the first V training volumes written, how large and how contrasted
each finding is after resampling to 64 x 64 in-plane (DIR/visibility.csv, DIR/visibility_lesions.csv).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    from ctvlp.data.synth.findings import DIFFICULTIES

    parser = subparsers.add_parser("synth", help="write a synthetic chest-CT cohort in CT-RATE's layout",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (dataset/, radgenome/ inside)")
    parser.add_argument("--n", type=int, required=True, help="number of volumes (reconstructions)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--difficulty", choices=tuple(DIFFICULTIES), default="easy",
                        help="finding size and contrast (default easy: all visible at 64 x 64; large: "
                             "1.8x the size, for 3 mm voxels as in `ctvlp demo`)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of patients in CT-RATE's 'valid' split (default 0.2)")
    parser.add_argument("--matrix", type=int, default=128, help="in-plane matrix (default 128)")
    parser.add_argument("--raw-fraction", type=float, default=0.2,
                        help="share of volumes stored as HU + 1024 (default 0.2)")
    parser.add_argument("--visibility", type=int, default=0, metavar="V",
                        help="measure finding visibility on the first V training volumes (default 0: skip)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ctvlp.data.synth.cohort import SynthConfig, write_cohort
    from ctvlp.errors import BadDatasetError

    try:
        cfg = SynthConfig(out=str(args.out), n=args.n, seed=args.seed, difficulty=args.difficulty,
                          workers=args.workers, val_fraction=args.val_fraction, matrix=args.matrix,
                          raw_fraction=args.raw_fraction)
    except ValueError as err:
        raise BadDatasetError(None, str(err)) from None
    start = time.perf_counter()
    summary = write_cohort(cfg)
    seconds = time.perf_counter() - start
    print(f"wrote {summary['volumes']} volumes ({summary['patients']} patients, {summary['scans']} scans; "
          f"train {summary['splits']['train']}, valid {summary['splits']['valid']}; "
          f"{summary['raw_volumes']} stored raw) to {args.out} in {seconds:.1f} s "
          f"({100 * seconds / summary['volumes']:.1f} s per 100 volumes, {cfg.workers} worker(s))")
    print("label prevalence (per scan): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["prevalence"].items()))
    if args.visibility > 0:
        _visibility(args.out, args.visibility)
    return 0


def _visibility(out: Path, count: int) -> None:
    import pandas as pd

    from ctvlp.data.synth.visibility import measure_cohort

    lesions, summary = measure_cohort(out, count)
    lesions.to_csv(out / "visibility_lesions.csv", index=False)
    summary.to_csv(out / "visibility.csv", index=False)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"visibility at 64 x 64 in-plane (first {count} training volumes):")
        print(summary.to_string(index=False))
