"""`ctvlp manifest`: build a manifest from CT-RATE (+ RadGenome) or a CSV/JSONL, or merge manifests.

    ctvlp manifest ctrate ROOT [--radgenome DIR] [--val-fraction F] --out M.parquet
    ctvlp manifest generic FILE [--root DIR] --out M.parquet
    ctvlp manifest merge A.parquet B.parquet --out M.parquet

Each prints rows per split, patients, label prevalence among available labels, and how many rows
were skipped; the skipped list (name, reason) is written to `M.skipped.csv` beside the output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("manifest", help="build or merge manifests (one row per volume)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    ctrate = kinds.add_parser("ctrate", help="a CT-RATE tree (ROOT/dataset/...), optionally with RadGenome")
    ctrate.add_argument("root", type=Path, help="CT-RATE root: the folder that holds dataset/")
    ctrate.add_argument("--radgenome", type=Path, help="RadGenome-ChestCT folder (region CSVs, masks/)")
    ctrate.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of CT-RATE train patients held out as 'valid' (default 0.1)")
    generic = kinds.add_parser("generic", help="a CSV or JSONL with a `path` column")
    generic.add_argument("file", type=Path, help="CSV, or JSONL (.jsonl / .ndjson)")
    generic.add_argument("--root", type=Path, help="folder relative paths start from (default: the file's)")
    generic.add_argument("--val-fraction", type=float, default=0.1, help="patients to 'valid' when split is blank")
    generic.add_argument("--test-fraction", type=float, default=0.1, help="patients to 'test' when split is blank")
    generic.add_argument("--source", default="generic", help="dataset name written in the source column")
    for sub in (ctrate, generic):
        sub.add_argument("--label-map", help="packaged mapping name (ctrate, rad_chestct) or a YAML file")
        sub.add_argument("--seed", type=int, default=0, help="seed of the patient-hash split (default 0)")
    merge = kinds.add_parser("merge", help="concatenate manifests; label columns united, absent -> <NA>")
    merge.add_argument("inputs", type=Path, nargs="+", help="manifests (.parquet or .csv)")
    for sub in (ctrate, generic, merge):
        sub.add_argument("--out", type=Path, required=True, help="output manifest (.parquet or .csv)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        manifest, skipped = _build(args)
    for warning in caught:
        print(f"ctvlp manifest: warning: {warning.message}", file=sys.stderr)
    manifest.save(args.out)
    print(summary(manifest, args.out))
    if skipped is not None:
        print(f"skipped: {len(skipped)} row(s), listed in {_write_skipped(skipped, args.out)}")
    return 0


def _build(args: argparse.Namespace):
    """(Manifest, skipped list or None for merge) for the chosen kind."""
    from ctvlp.data.manifest import Manifest
    from ctvlp.errors import BadDatasetError

    if args.kind == "merge":
        from ctvlp.data.adapters.labelmap import merge

        try:
            return merge([Manifest.load(p) for p in args.inputs]), None
        except ValueError as err:
            raise BadDatasetError(None, f"cannot merge {[str(p) for p in args.inputs]}: {err}") from None
    if args.kind == "ctrate":
        from ctvlp.data.adapters.ctrate import build_manifest

        return build_manifest(args.root, radgenome=args.radgenome, val_fraction=args.val_fraction,
                              seed=args.seed, label_map=args.label_map)
    from ctvlp.data.adapters.generic import build_manifest

    return build_manifest(args.file, root=args.root, label_map=args.label_map, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, seed=args.seed, source=args.source)


def _write_skipped(skipped: list[tuple[str, str]], out: Path) -> Path:
    import pandas as pd

    path = out.with_name(out.name.rsplit(".", 1)[0] + ".skipped.csv")
    pd.DataFrame(skipped, columns=["name", "reason"]).to_csv(path, index=False)
    return path


def summary(manifest, out: Path) -> str:
    """Rows and patients per split, label prevalence among rows where the label is available."""
    df = manifest.df
    lines = [f"wrote {out}: {len(df)} volumes, {df['patient_id'].nunique()} patients, "
             f"sources {sorted(df['source'].unique())}",
             f"  {'split':<8}{'volumes':>9}{'patients':>10}"]
    for split in ("train", "valid", "test", *sorted(set(df["split"]) - {"train", "valid", "test"})):
        part = df[df["split"] == split]
        lines.append(f"  {split:<8}{len(part):>9}{part['patient_id'].nunique():>10}")
    values, available = manifest.labels()
    if manifest.label_names:
        lines.append(f"  {'label':<36}{'positive/available':>20}{'prevalence':>12}")
    for k, name in enumerate(manifest.label_names):
        n_avail, n_pos = int(available[:, k].sum()), int(values[available[:, k], k].sum())
        share = f"{100 * n_pos / n_avail:.1f}%" if n_avail else "n/a"
        lines.append(f"  {name:<36}{f'{n_pos}/{n_avail}':>20}{share:>12}")
    return "\n".join(lines)
