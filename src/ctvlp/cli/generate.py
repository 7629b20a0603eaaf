"""`ctvlp generate PATH --checkpoint CKPT [--beam N]`: a report for one CT volume (report-decoder recipes)."""

from __future__ import annotations

import argparse

from ctvlp.cli._model import add_model_args, open_model


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("generate", help="generate a report for one CT volume (recipes with a report decoder)",
                       description="Greedy (--beam 1) or beam-search decoding of the checkpoint's report decoder.")
    add_model_args(p)
    p.add_argument("--beam", type=int, default=1, help="beam width (1: greedy)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="length limit (default: the decoder's)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    print(open_model(args).generate_report(args.path, beam=args.beam, max_new_tokens=args.max_new_tokens))
    return 0
