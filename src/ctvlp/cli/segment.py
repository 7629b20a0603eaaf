"""`ctvlp segment PATH --checkpoint CKPT --prompt aorta --out heat.nii.gz`: zero-shot probability maps.

Each map is a float32 NIfTI on the input's own grid and affine (opens over the input in any viewer),
P = (cos(voxel embedding, anchor of "This is <prompt>.") + 1) / 2, 0 outside the model's field of view.
One prompt: written to `--out`. Several: one file per prompt, `<out stem>_<prompt>.nii.gz` beside it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ctvlp.cli._model import add_model_args, open_model


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("segment", help="zero-shot segmentation heatmaps of one CT volume (voxel-head recipes)",
                       description=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--prompt", action="append", required=True, help="a structure name, e.g. aorta (repeatable)")
    p.add_argument("--out", required=True, help="output .nii.gz (several prompts: <stem>_<prompt>.nii.gz)")
    p.set_defaults(func=run)
    return p


def output_paths(out: str | Path, prompts: list[str]) -> dict[str, Path]:
    """--out for one prompt; ``<stem>_<prompt>.nii.gz`` beside it for several."""
    out = Path(out)
    if len(prompts) == 1:
        return {prompts[0]: out}
    stem = out.name[:-len(".nii.gz")] if out.name.endswith(".nii.gz") else out.stem
    return {p: out.with_name(f"{stem}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', p)}.nii.gz") for p in prompts}


def run(args) -> int:
    maps = open_model(args).segment(args.path, args.prompt)
    for prompt, path in output_paths(args.out, list(maps)).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        maps[prompt].to_nifti(path)
        print(f"{prompt}: {path} (max probability {float(maps[prompt].array.max()):.3f})")
    return 0
