"""Which HU windows let the demo's vision tower see the synthetic findings? A supervised probe.

For each window set, the demo recipe's vision tower (fresh, seed 0) + a linear head on max-pooled tokens
is trained with BCE on the labels of the training split (AdamW, lr 1e-3, warmup + cosine, batch 32) and
scored by per-label AUROC on the test split. Inputs are whole volumes of the cache through the library's
own sampler (``ctvlp.data.sampling``: 16 centred slices, 32 x 40 in-plane), each window one channel.
Only the windows change between rows, so the table isolates what the input shows the tower.

    python scripts/window_probe.py --cache demo_out/cache --steps 300 --out docs/results/demo-windows-DATE.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ctvlp.data.cache import Cache
from ctvlp.data.loader import CTDataset
from ctvlp.data.sampling import SamplerConfig
from ctvlp.eval.metrics import auroc
from ctvlp.models.vit3d import create_vision_tower
from ctvlp.recipes import get_recipe
from ctvlp.recipes.demo import DEMO_WINDOWS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from machine import machine  # noqa: E402  (what every saved benchmark result records about the machine)

WINDOW_SETS: dict[str, tuple[tuple[float, float], ...]] = {
    "whole range": DEMO_WINDOWS[:1], "+ lung": DEMO_WINDOWS[:2], "+ lung + low attenuation": DEMO_WINDOWS[:3],
    "+ lung + low attenuation + calcium": DEMO_WINDOWS}


def split_arrays(cache: Cache, split: str, windows) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    sampler = SamplerConfig(mode="whole", size=(32, 40), min_depth=16, max_slices=16, text="report", windows=windows)
    ds = CTDataset(cache, sampler, split=split)
    images = torch.stack([torch.as_tensor(ds[i]["image"]) for i in range(len(ds))])  # (N, C, 16, 32, 40)
    return images, ds.labels, ds.label_names


def probe(cache: Cache, windows, steps: int, seed: int = 0) -> dict[str, float]:
    x_train, y_train, names = split_arrays(cache, "train", windows)
    x_test, y_test, _ = split_arrays(cache, "test", windows)
    rendered = [k for k in range(len(names)) if 0 < y_train[:, k].sum() < len(y_train)]
    y_train = torch.as_tensor(y_train[:, rendered])
    torch.manual_seed(seed)
    vision = create_vision_tower(dataclasses.replace(get_recipe("demo").model.vision, in_chans=len(windows)))
    head = nn.Linear(vision.width, len(rendered))
    params = [*vision.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + np.cos(np.pi * s / steps)))

    def logits(x: torch.Tensor) -> torch.Tensor:
        return head(vision(x)["tokens"].amax(1))  # (B, K)

    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(x_train), (32,), generator=generator)
        loss = nn.functional.binary_cross_entropy_with_logits(logits(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    vision.eval()
    with torch.no_grad():
        scores = torch.cat([logits(x_test[i:i + 64]) for i in range(0, len(x_test), 64)]).numpy()
    return {names[k]: float(auroc(scores[:, j], y_test[:, k])) for j, k in enumerate(rendered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True, help="a prepared demo cache (ctvlp demo writes DIR/cache)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args()
    cache, rows = Cache(args.cache), {}
    for name, windows in WINDOW_SETS.items():
        start = time.perf_counter()
        rows[name] = {"windows": windows, "auroc": probe(cache, windows, args.steps),
                      "seconds": round(time.perf_counter() - start, 1)}
        per_label = rows[name]["auroc"]
        print(f"{name:26s} mean {np.mean(list(per_label.values())):.3f}  " + "  ".join(
            f"{label} {value:.2f}" for label, value in sorted(per_label.items())), flush=True)
    if args.out:
        record = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "steps": args.steps, "rows": rows}
        args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
