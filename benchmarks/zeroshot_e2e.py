"""End-to-end zero-shot on a full-size chest CT vs reading it and one encoder forward.

    python benchmarks/zeroshot_e2e.py [--workdir DIR] [--source CHEST_CT.nii.gz]

Input: the real chest CT ``tests/data/real/chest_ct_angio_1p5mm.nii.gz`` (120 x 126 x 164 voxels,
1.5 mm) resampled (trilinear) to 512 x 512 x 300 int16 and saved as .nii.gz (same field of view and
orientation, ~0.35 x 0.37 x 0.82 mm). Model: the ``demo`` recipe (not debug), randomly initialised, saved
as a checkpoint with the demo's cache preprocessing (3 x 3 x 6 mm) and the 18 CT-RATE labels. In one run:

* (a) ``read``: ``ctvlp.load_volume`` of the file (decompress, read, HU checks);
* (b) ``forward``: one ``encode_image`` on the preprocessed, sampled input (median of 3);
* (c) ``e2e``: ``CtvlpModel.zero_shot(path)``: read + preprocess + sample + forward + 36 prompts through
  the text tower + scores, the model's first call (what one `ctvlp zeroshot` run does; loading the
  checkpoint is excluded and reported as ``load``); ``e2e_second_call``: the same call again, warm.

Goal: (c) <= 3 x ((a) + (b)). Also records where (c)'s time goes (reorient, resampling with the antialias
prefilter, body mask, sampling, prompts). Results: benchmarks/results/zeroshot_e2e-<date>.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from machine import median_seconds, save_result

import ctvlp
from ctvlp.config import to_dict
from ctvlp.data import preprocess as pp
from ctvlp.data.labels import CTRATE_LABELS
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.models.vlp import VisionLanguageModel
from ctvlp.recipes import get_recipe
from ctvlp.train.checkpoint import save_checkpoint

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "real" / "chest_ct_angio_1p5mm.nii.gz"
SHAPE = (512, 512, 300)
DEMO_SPACING = (3.0, 3.0, 6.0)


def full_size_ct(source: Path, out: Path) -> Path:
    """``source`` resampled to :data:`SHAPE` (same field of view), int16 .nii.gz."""
    img = nib.load(str(source))
    data = np.asarray(img.dataobj, dtype=np.float32)
    factors = np.array(SHAPE) / np.array(data.shape)
    big = ndimage.zoom(data, factors, order=1, grid_mode=True, mode="nearest")
    affine = img.affine @ np.diag([*(1 / factors), 1.0])
    affine[:3, 3] = img.affine[:3, :3] @ (0.5 / factors - 0.5) + img.affine[:3, 3]  # same field of view
    nib.save(nib.Nifti1Image(np.rint(big).astype(np.int16), affine), str(out))
    return out


def demo_checkpoint(folder: Path) -> Path:
    cfg = get_recipe("demo")
    torch.manual_seed(0)
    model = VisionLanguageModel(cfg.model)
    return save_checkpoint(folder, {"config": to_dict(cfg), "recipe": "demo", "step": 0, "model": model.state_dict(),
                                    "preprocess": PreprocessConfig(spacing=DEMO_SPACING).to_dict(),
                                    "label_names": list(CTRATE_LABELS)}, keep_last=1)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def stages(model, path: Path) -> dict:
    """Seconds of each step of the inference path, one call each."""
    cfg = model.spec.preprocess
    volume, t_read = timed(lambda: ctvlp.load_volume(path))
    (image, affine), t_orient = timed(lambda: pp.reorient_ras(volume.array, volume.affine))
    (small, _), t_resample = timed(lambda: pp.resample(image, affine, cfg.spacing, "trilinear", cfg.antialias))
    prepared, t_pre = timed(lambda: pp.preprocess(volume, {}, cfg))
    small = np.rint(small).astype(np.int16)
    _, t_body = timed(lambda: pp.body_mask(small, cfg.body_threshold))
    _, t_sample = timed(lambda: model.sample(prepared))
    from ctvlp.data.prompts import build_prompts
    from ctvlp.models.prompting import encode_texts

    texts, _ = build_prompts(model.spec.label_names, model.spec.prompt_style)
    _, t_prompts = timed(lambda: encode_texts(model.model, texts))
    return {"read": t_read, "reorient": t_orient, "resample": t_resample,
            "body_mask": t_body, "preprocess_total": t_pre, "sample": t_sample, "prompts": t_prompts,
            "n_prompts": len(texts), "preprocessed_shape": list(prepared.image.shape)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=None, help="where the input and checkpoint go (default: a temp dir)")
    parser.add_argument("--source", type=Path, default=REAL, help="the chest CT to resample (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        path = full_size_ct(args.source, work / "chest_512x512x300.nii.gz")
        checkpoint = demo_checkpoint(work / "checkpoints")
        model, t_load = timed(lambda: ctvlp.load_model(checkpoint))
        _, t_read = timed(lambda: ctvlp.load_volume(path))
        image, slice_mask = model._inputs(model.sample(model.prepare(path)[1]))
        with torch.no_grad():
            t_forward = median_seconds(lambda: model.model.encode_image(image, slice_mask), 3)
        _, t_e2e = timed(lambda: model.zero_shot(path))  # the first call, as `ctvlp zeroshot` makes it
        _, t_again = timed(lambda: model.zero_shot(path))  # warm: prompts and kernels initialised
        parts = stages(model, path)
        file_mb = path.stat().st_size / 1e6
    ratio = t_e2e / (t_read + t_forward)
    print(f"(a) read {t_read:.2f} s  (b) forward {t_forward:.3f} s  (c) e2e zero-shot {t_e2e:.2f} s "
          f"(load checkpoint {t_load:.2f} s, excluded); a second call {t_again:.2f} s = "
          f"{t_again / (t_read + t_forward):.2f}x")
    print(f"ratio (c) / ((a) + (b)) = {ratio:.2f}  (goal <= 3)")
    print("stages: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items() if isinstance(v, float)))
    save_result("zeroshot_e2e", {"goal": 3.0, "input_shape": list(SHAPE), "input_file_mb": file_mb, "read": t_read, "forward": t_forward, "e2e": t_e2e,
                                 "e2e_second_call": t_again,
                                 "load_checkpoint_excluded": t_load, "ratio": ratio, "stages": parts,
                                 "input_shape_model": list(image.shape)})


if __name__ == "__main__":
    main()
