"""`ctvlp export CKPT --out DIR`: a self-contained model folder (weights, configs, text tower) for inference."""

from __future__ import annotations

import argparse


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="write a checkpoint as a folder that loads offline (ctvlp.load_model)",
                       description="DIR gets model.safetensors, config.json (model, preprocessing, evaluation "
                                   "sampler, prompt style, labels, versions) and text/ (the text tower).")
    p.add_argument("checkpoint", help="a checkpoint file (step-*.pt) or a run folder (its latest checkpoint)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from ctvlp.inference import export_model, load_model

    out = export_model(load_model(args.checkpoint), args.out)
    print(f"exported {args.checkpoint} to {out}")
    return 0
