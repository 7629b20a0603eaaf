"""Arguments and model loading shared by the commands that run a trained model (zeroshot, segment,
generate, embed, index build, retrieve; eval takes `--device` from here too)."""

from __future__ import annotations

import argparse
import sys

DEVICES = "auto, cpu, cuda, cuda:N or mps"


def device(name: str):
    """`--device NAME` -> torch.device: ``auto`` is CUDA when torch sees a GPU, else the CPU; a device
    this machine does not have, or a name torch does not know, is a usage error naming the choices."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{name!r} is not a device; use {DEVICES}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{name!r}: CUDA is not available on this machine "
                                         f"(torch {torch.__version__}); use --device cpu")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{name!r}: MPS is not available on this machine; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{name!r}: not a device ctvlp runs on; use {DEVICES}")
    return dev


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=device, default="auto",
                   help=f"where the model runs: {DEVICES} (default auto: CUDA when available, else the CPU)")


def add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file (step-*.pt), a run folder (its latest checkpoint) or a `ctvlp export` folder")
    p.add_argument("--max-voxels", type=int, default=None,
                   help="refuse larger inputs before reading them (default: $CTVLP_MAX_VOXELS or 600 M voxels)")
    add_device_arg(p)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a CT volume: .nii/.nii.gz/.nrrd/.mha/.mhd file or a DICOM series folder")
    add_checkpoint_args(p)


def add_batch_args(p: argparse.ArgumentParser) -> None:
    """`--workers`, `--batch-size` and `--no-progress` of the commands that embed many files (embed, index build)."""
    p.add_argument("--workers", type=int, default=2,
                   help="processes that read and preprocess files (0: the main process); default 2")
    p.add_argument("--batch-size", type=int, default=1,
                   help="volumes of one input shape per encoder call; default 1 (exactly encode_volume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (shown on a terminal, on stderr)")


def open_model(args):
    """The CtvlpModel of ``args.checkpoint`` on ``args.device`` with the ``--max-voxels`` limit."""
    from ctvlp.inference import load_model

    return load_model(args.checkpoint, device=args.device, max_voxels=args.max_voxels)


def embed_inputs(args, command: str):
    """(model, EmbedResult) of ``args.paths``; each skipped input is one stderr line."""
    from ctvlp.inference.batch import embed_files

    model = open_model(args)
    result = embed_files(model, args.paths, workers=args.workers, batch_size=args.batch_size,
                         progress=not args.no_progress)
    for path, reason in result.skipped:
        print(f"ctvlp {command}: skipped {path}: {reason}", file=sys.stderr)
    return model, result
