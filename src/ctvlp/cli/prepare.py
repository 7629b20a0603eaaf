"""`ctvlp prepare`: preprocess a manifest's volumes once into a chunk cache."""

from __future__ import annotations

import argparse

from ctvlp.recipes import NAMES


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise argparse.ArgumentTypeError(f"{what} needs {n} comma-separated numbers, got '{text}'")
    return values


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard needs i/N, got '{text}'") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard i/N needs 0 <= i < N, got '{text}'")
    return i, n


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("prepare", help="preprocess a manifest's volumes into a chunk cache",
                       description="Reorient to RAS, resample, crop to the body and store int16 HU z-first, "
                                   "once per volume. Resumable; bad volumes are skipped and listed.")
    p.add_argument("--manifest", required=True, help="manifest (.parquet or .csv) from `ctvlp manifest`")
    p.add_argument("--out", required=True, help="cache directory")
    p.add_argument("--recipe", choices=NAMES,
                   help="prepare what this recipe trains on (its data.preprocess: spacing, HU window, body crop); "
                        "the flags below override single settings")
    p.add_argument("--debug", action="store_true", help="with --recipe: its tiny debug variant's preprocessing")
    p.add_argument("--spacing", type=lambda s: _floats(s, 3, "--spacing"),
                   help="target spacing x,y,z in mm (default: the recipe's, else 1.5,1.5,3)")
    p.add_argument("--window", type=lambda s: _floats(s, 2, "--window"),
                   help="HU window mapped to [-1, 1] at sampling time (default: the recipe's, else -1000,1000); "
                        "write --window=-1000,1000")
    p.add_argument("--no-crop", action="store_true", help="keep the full field of view (no body crop)")
    p.add_argument("--no-antialias", action="store_true",
                   help="no Gaussian prefilter before downsampling (plain trilinear sampling)")
    p.add_argument("--shard", default=(0, 1), type=_shard, help="process rows with index %% N == i (i/N)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: in this process)")
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of this shard")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal, on stderr)")
    p.set_defaults(func=run)
    return p


def preprocess_config(args: argparse.Namespace):
    """The recipe's preprocessing (``--recipe``, ``--debug``), else the default, with the explicit flags applied."""
    import dataclasses

    from ctvlp.config import ConfigError
    from ctvlp.data.preprocess import PreprocessConfig

    if args.debug and not args.recipe:
        raise ConfigError("--debug needs --recipe (the debug variant of which recipe?)")
    if args.recipe:
        from ctvlp.recipes import get_recipe

        config = get_recipe(args.recipe, debug=args.debug).data.preprocess
    else:
        config = PreprocessConfig()
    changes = {"spacing": args.spacing, "hu_window": args.window}
    changes = {k: v for k, v in changes.items() if v is not None}
    changes.update({"crop_to_body": False} if args.no_crop else {})
    changes.update({"antialias": False} if args.no_antialias else {})
    return dataclasses.replace(config, **changes)


def run(args: argparse.Namespace) -> int:
    from ctvlp.data.manifest import Manifest
    from ctvlp.data.prepare import prepare
    from ctvlp.errors import BadDatasetError

    manifest = Manifest.load(args.manifest)
    config = preprocess_config(args)
    report = prepare(manifest, args.out, config, shard=args.shard, workers=args.workers, limit=args.limit,
                     progress=not args.no_progress)
    total = report.done + report.cached + len(report.failed)
    rate = report.done / report.seconds if report.seconds > 0 else 0.0
    print(f"prepared {report.done}, already cached {report.cached}, failed {len(report.failed)} "
          f"of {total} volumes in {report.seconds:.1f} s ({rate:.2f} volumes/s)")
    print(f"index: {report.index_path}")
    if report.failed:
        print(f"failures ({len(report.failed)}) listed in {report.failures_path}:")
        for f in report.failed[:5]:
            print(f"  {f['id']}: {f['reason']}")
    if total and report.done + report.cached == 0:
        raise BadDatasetError(args.manifest, f"no volume could be prepared; see {report.failures_path}")
    return 0
