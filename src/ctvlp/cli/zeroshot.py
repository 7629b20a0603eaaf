"""`ctvlp zeroshot PATH --checkpoint CKPT`: the probability of each label's finding in one CT volume."""

from __future__ import annotations

import argparse
import json

from ctvlp.cli._model import add_model_args, open_model


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("zeroshot", help="zero-shot classification of one CT volume by a trained model",
                       description="Score labels by their positive/negative prompt pair (the checkpoint's "
                                   "prompt style and preprocessing); default labels: the checkpoint's.")
    add_model_args(p)
    p.add_argument("--labels", nargs="+", default=None, help="labels to score (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help='print {"labels": {name: probability}} instead of a table')
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    scores = open_model(args).zero_shot(args.path, args.labels)
    if args.json:
        print(json.dumps({"labels": scores}))
        return 0
    width = max(len(name) for name in scores)
    for name, p in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"{name:<{width}}  {p:.3f}")
    return 0
