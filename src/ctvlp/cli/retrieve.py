"""`ctvlp retrieve IDX "text query" [-k 10] [--json]`: the indexed CT files closest to a text."""

from __future__ import annotations

import argparse
import json

from ctvlp.cli._model import add_device_arg


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("retrieve", help="find the CT files of an index closest to a text query",
                       description="Encodes the query with the index's own model and ranks the files by cosine "
                                   "similarity.")
    p.add_argument("index", help="a folder written by `ctvlp index build`")
    p.add_argument("query", help="the text to search for, e.g. \"Large right pleural effusion.\"")
    p.add_argument("-k", type=int, default=10, help="how many files to list (default 10)")
    p.add_argument("--checkpoint", default=None,
                   help="encode the query with this model instead of the index's export (must be the same model)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {rank, path, score}")
    add_device_arg(p)
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctvlp.errors import InferenceError
    from ctvlp.inference.index import load_index, query_model, search

    if not args.query.strip():
        raise InferenceError(None, "empty query: give the text to search for")
    if args.k < 1:
        raise InferenceError(None, f"-k must be at least 1, got {args.k}")
    index = load_index(args.index)
    hits = search(index, query_model(index, args.checkpoint, args.device), args.query, args.k)
    if args.json:
        print(json.dumps(hits))
        return 0
    for hit in hits:
        print(f"{hit['rank']:>4}  {hit['score']:+.4f}  {hit['path']}")
    return 0
