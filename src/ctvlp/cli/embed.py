"""`ctvlp embed PATH... --checkpoint CKPT --out emb.parquet`: image embeddings of many CT files."""

from __future__ import annotations

import argparse
import sys

from ctvlp.cli._model import add_batch_args, add_checkpoint_args, embed_inputs


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("embed", help="embed many CT files into a Parquet table",
                       description="PATH: a file, a DICOM series folder, or a folder searched for *.nii.gz, *.nii, "
                                   "*.nrrd, *.nhdr, *.mha, *.mhd and DICOM series folders. Files that cannot be "
                                   "embedded are skipped and listed in OUT.skipped.csv; exit code 2 if none was "
                                   "embedded.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="CT files, DICOM series folders or folders to search")
    add_checkpoint_args(p)
    p.add_argument("--out", required=True, help="the Parquet file to write (path, embedding, model, step, ...)")
    add_batch_args(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctvlp.inference.batch import write_embeddings, write_skipped

    model, result = embed_inputs(args, "embed")
    skipped = write_skipped(result, f"{args.out}.skipped.csv")
    if not result.paths:
        print(f"ctvlp embed: error: no input could be embedded ({len(result.skipped)} skipped, listed in {skipped})",
              file=sys.stderr)
        return 2
    out = write_embeddings(result, model, args.out)
    print(f"embedded {len(result.paths)} volumes ({result.embeddings.shape[1]} dims) into {out}; "
          f"skipped {len(result.skipped)} (listed in {skipped})")
    return 0
