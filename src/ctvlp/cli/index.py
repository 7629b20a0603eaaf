"""`ctvlp index build DIR --checkpoint CKPT --out IDX`: an embedding index of the CT files under DIR."""

from __future__ import annotations

import argparse
import os
import sys

from ctvlp.cli._model import add_batch_args, add_checkpoint_args, embed_inputs


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("index", help="build an embedding index for `ctvlp retrieve`",
                       description="Subcommands: build.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="embed the CT files under DIR into an index folder",
                               description="Reads DIR as `ctvlp embed` reads a folder; IDX gets index.json, "
                                           "embeddings.parquet, skipped.csv and model/ (an export of the model, "
                                           "which encodes the queries); files are listed by absolute path.")
    build.add_argument("paths", nargs="+", metavar="DIR", help="folders (or files) of CT volumes")
    add_checkpoint_args(build)
    build.add_argument("--out", required=True, help="the index folder to write")
    add_batch_args(build)
    build.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctvlp.inference.index import write_index

    args.paths = [os.path.abspath(p) for p in args.paths]  # the index lists absolute paths: usable from any folder
    model, result = embed_inputs(args, "index build")
    if not result.paths:
        print(f"ctvlp index build: error: no input could be embedded ({len(result.skipped)} skipped)", file=sys.stderr)
        return 2
    out = write_index(result, model, args.out)
    print(f"indexed {len(result.paths)} volumes ({result.embeddings.shape[1]} dims) in {out}; "
          f"skipped {len(result.skipped)}")
    return 0
