"""Arguments and model loading shared by the inference subcommands (zeroshot, segment, generate, embed, index)."""

from __future__ import annotations

import argparse
import sys


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file (step-*.pt), a run folder (its latest checkpoint) or a `ctvlp export` folder")
    p.add_argument("--max-voxels", type=int, default=None,
                   help="refuse larger inputs before reading them (default: $CTVLP_MAX_VOXELS or 600 M voxels)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a CT volume: .nii/.nii.gz/.nrrd/.mha/.mhd file or a DICOM series folder")
    add_checkpoint_args(p)


def add_batch_args(p: argparse.ArgumentParser) -> None:
    """``--workers`` and ``--batch-size`` of the commands that embed many files (embed, index build)."""
    p.add_argument("--workers", type=int, default=2,
                   help="processes that read and preprocess files (0: the main process); default 2")
    p.add_argument("--batch-size", type=int, default=1,
                   help="volumes of one input shape per encoder call; default 1 (exactly encode_volume)")


def open_model(args):
    """The CtvlpModel of ``args.checkpoint`` with the ``--max-voxels`` limit."""
    from ctvlp.inference import load_model

    return load_model(args.checkpoint, max_voxels=args.max_voxels)


def embed_inputs(args, command: str):
    """(model, EmbedResult) of ``args.paths``; each skipped input is one stderr line."""
    from ctvlp.inference.batch import embed_files

    model = open_model(args)
    result = embed_files(model, args.paths, workers=args.workers, batch_size=args.batch_size)
    for path, reason in result.skipped:
        print(f"ctvlp {command}: skipped {path}: {reason}", file=sys.stderr)
    return model, result
