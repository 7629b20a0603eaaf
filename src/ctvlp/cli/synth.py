"""`ctvlp synth`: write a synthetic chest-CT cohort in CT-RATE's layout (+ RadGenome regions and masks).

    ctvlp synth --out DIR --n N [--seed S] [--difficulty large|easy|medium|hard] [--workers K]
                [--val-fraction F] [--matrix M] [--raw-fraction R] [--visibility V] [--site rad_chestct]

Then `ctvlp manifest ctrate DIR --radgenome DIR/radgenome --out M.parquet` reads it like CT-RATE.
`--site rad_chestct` also writes DIR/rad_chestct.csv, the cohort as a second site with RAD-ChestCT's
label names and without the labels it lacks (mosaic attenuation, arterial / coronary calcification):
`ctvlp manifest generic DIR/rad_chestct.csv --label-map rad_chestct --source rad-chestct --out M.parquet`.
`--visibility V` measures, on the first V training volumes written, how large and how contrasted
each finding is after resampling to 64 x 64 in-plane (DIR/visibility.csv, DIR/visibility_lesions.csv).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class LazyChoices(Sequence):
    """Choices that argparse reads from a registry only when it needs them (this command's help, or a
    value to check): the synth registries import numpy and scipy, which `ctvlp --help` does not wait
    for. Give the argument a ``metavar``: argparse lists plain choices when the argument is added."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load = load

    @functools.cached_property
    def _names(self) -> tuple[str, ...]:
        return tuple(self._load())

    def __getitem__(self, i):
        return self._names[i]

    def __len__(self) -> int:
        return len(self._names)


def _difficulties() -> list[str]:
    from ctvlp.data.synth.findings import DIFFICULTIES

    return list(DIFFICULTIES)


def _sites() -> list[str]:
    from ctvlp.data.synth.sites import SITES

    return sorted(SITES)


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("synth", help="write a synthetic chest-CT cohort in CT-RATE's layout",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder (dataset/, radgenome/ inside)")
    parser.add_argument("--n", type=int, required=True, help="number of volumes (reconstructions)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    parser.add_argument("--difficulty", choices=LazyChoices(_difficulties), default="easy", metavar="LEVEL",
                        help="finding size and contrast: %(choices)s (default easy: all visible at 64 x 64; "
                             "large: 1.8x the size, for 3 mm voxels as in `ctvlp demo`)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of patients in CT-RATE's 'valid' split (default 0.2)")
    parser.add_argument("--matrix", type=int, default=128, help="in-plane matrix (default 128)")
    parser.add_argument("--raw-fraction", type=float, default=None,
                        help="share of volumes stored as HU + 1024 (default 0.2; 0 with --site)")
    parser.add_argument("--visibility", type=int, default=0, metavar="V",
                        help="measure finding visibility on the first V training volumes (default 0: skip)")
    parser.add_argument("--site", choices=LazyChoices(_sites), default=None, metavar="SITE",
                        help="also write DIR/SITE.csv: the cohort as a second site for the generic adapter, "
                             "with that dataset's label columns (%(choices)s; docs/synthetic_cohort.md)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal, on stderr)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ctvlp.data.synth.cohort import SynthConfig, write_cohort
    from ctvlp.errors import BadDatasetError
    from ctvlp.progress import progress_bar

    raw_fraction = args.raw_fraction if args.raw_fraction is not None else (0.0 if args.site else 0.2)
    if args.site and raw_fraction > 0:
        raise BadDatasetError(None, "--site needs --raw-fraction 0: the generic adapter reads volumes as stored "
                                    "(the HU + 1024 trap is CT-RATE's, fixed only by the ctrate adapter)")
    try:
        cfg = SynthConfig(out=str(args.out), n=args.n, seed=args.seed, difficulty=args.difficulty,
                          workers=args.workers, val_fraction=args.val_fraction, matrix=args.matrix,
                          raw_fraction=raw_fraction)
    except ValueError as err:
        raise BadDatasetError(None, str(err)) from None
    start = time.perf_counter()
    with progress_bar(cfg.n, "synth", "vol", not args.no_progress) as bar:
        summary = write_cohort(cfg, progress=bar.update)
    seconds = time.perf_counter() - start
    print(f"wrote {summary['volumes']} volumes ({summary['patients']} patients, {summary['scans']} scans; "
          f"train {summary['splits']['train']}, valid {summary['splits']['valid']}; "
          f"{summary['raw_volumes']} stored raw) to {args.out} in {seconds:.1f} s "
          f"({100 * seconds / summary['volumes']:.1f} s per 100 volumes, {cfg.workers} worker(s))")
    print("label prevalence (per scan): " + ", ".join(f"{k} {v:.2f}" for k, v in summary["prevalence"].items()))
    if args.site:
        _site(args.out, args.site)
    if args.visibility > 0:
        _visibility(args.out, args.visibility)
    return 0


def _site(out: Path, site: str) -> None:
    from ctvlp.data.synth.sites import write_site_table

    path = write_site_table(out, site)
    print(f"wrote {path}: the cohort as site {site!r}; read it with `ctvlp manifest generic {path} "
          f"--label-map {site} --source {site.replace('_', '-')} --out M.parquet`")


def _visibility(out: Path, count: int) -> None:
    import pandas as pd

    from ctvlp.data.manifest import save_table
    from ctvlp.data.synth.visibility import measure_cohort

    lesions, summary = measure_cohort(out, count)
    save_table(lesions, out / "visibility_lesions.csv")
    save_table(summary, out / "visibility.csv")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"visibility at 64 x 64 in-plane (first {count} training volumes):")
        print(summary.to_string(index=False))
