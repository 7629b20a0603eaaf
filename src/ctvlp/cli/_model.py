"""Arguments and model loading shared by the inference subcommands (zeroshot, segment, generate)."""

from __future__ import annotations

import argparse


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a CT volume: .nii/.nii.gz/.nrrd/.mha/.mhd file or a DICOM series folder")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file (step-*.pt), a run folder (its latest checkpoint) or a `ctvlp export` folder")
    p.add_argument("--max-voxels", type=int, default=None,
                   help="refuse larger inputs before reading them (default: $CTVLP_MAX_VOXELS or 600 M voxels)")


def open_model(args):
    """The CtvlpModel of ``args.checkpoint`` with the ``--max-voxels`` limit."""
    from ctvlp.inference import load_model

    return load_model(args.checkpoint, max_voxels=args.max_voxels)
