"""Data-pipeline benchmark: cache vs on-the-fly samples, chunk vs whole reads, `prepare` peak memory.

    python benchmarks/data_pipeline.py [--work DIR] [--matrix 512] [--volumes 3] [--mem-matrix 256]

1. samples/s of a training sample read from the cache (``CTDataset``) vs the usual on-the-fly path
   (MONAI LoadImage -> Orientation RAS -> Spacing -> ScaleIntensityRange -> ResizeWithPadOrCrop on the
   .nii.gz), on the same `ctvlp synth` volumes (512 x 512 in-plane, 0.635 mm, 1.5 mm slices), both to
   (1, D, 224, 224) at 1.5 x 1.5 x 3 mm, one torch thread (as in one DataLoader worker).
2. Reading a 32-slice chunk vs the whole of a 300 x 256 x 256 int16 cached volume, with the OS page
   cache of image.npy dropped before every read (fsync + posix_fadvise DONTNEED) and warm.
3. `ctvlp prepare` peak RSS (its own process, os.wait4) on 10 vs 40 `ctvlp synth` volumes.

Results: benchmarks/results/data_pipeline-<date>.json and one line in benchmarks/results/data_pipeline.md.
Ratios are measured within one run; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from machine import machine

from ctvlp.cli import main as ctvlp
from ctvlp.data.cache import Cache, CachedVolume, write_cached_volume
from ctvlp.data.loader import CTDataset
from ctvlp.data.manifest import Manifest
from ctvlp.data.sampling import SamplerConfig, VolumeRecord, draw_sample

RESULTS = Path(__file__).resolve().parent / "results"
SPACING = (1.5, 1.5, 3.0)
SIZE = (224, 224)


def cohort(work: Path, n: int, matrix: int, name: str) -> tuple[Path, Path]:
    """`ctvlp synth` (no raw-stored volumes) + `ctvlp manifest ctrate`; returns (manifest, dataset dir)."""
    syn, manifest = work / f"{name}-synth", work / f"{name}.parquet"
    if not manifest.is_file():
        assert ctvlp(["synth", "--out", str(syn), "--n", str(n), "--matrix", str(matrix), "--raw-fraction", "0",
                      "--workers", "2"]) == 0
        assert ctvlp(["manifest", "ctrate", str(syn), "--radgenome", str(syn / "radgenome"),
                      "--out", str(manifest)]) == 0
    return manifest, syn


def on_the_fly_transform():
    from monai.transforms import (Compose, LoadImage, Orientation, ResizeWithPadOrCrop, ScaleIntensityRange,
                                  Spacing)

    return Compose([LoadImage(image_only=True, ensure_channel_first=True), Orientation(axcodes="RAS"),
                    Spacing(pixdim=SPACING, mode="bilinear"),
                    ScaleIntensityRange(-1000, 1000, -1.0, 1.0, clip=True),
                    ResizeWithPadOrCrop((*SIZE, -1))])


def rate(fn, items: list, passes: int) -> tuple[float, tuple]:
    """Samples per second of ``fn`` over ``items`` for ``passes`` passes (after one warm-up call)."""
    shape = tuple(fn(items[0]).shape)
    start = time.perf_counter()
    for _ in range(passes):
        for item in items:
            fn(item)
    return passes * len(items) / (time.perf_counter() - start), shape


def bench_samples(work: Path, n: int, matrix: int) -> dict:
    manifest, _ = cohort(work, n, matrix, "rate")
    cache_dir = work / "rate-cache"
    if not (cache_dir / "index").is_dir():
        assert ctvlp(["prepare", "--manifest", str(manifest), "--out", str(cache_dir), "--no-crop",
                      "--spacing", ",".join(map(str, SPACING))]) == 0
    paths = Manifest.load(manifest).df["path"].tolist()
    transform = on_the_fly_transform()
    fly, fly_shape = rate(lambda p: transform(p).permute(0, 3, 2, 1), paths, 1)  # (1, D, H, W)
    out = {"volumes": n, "source_shape_xyz": list(nib.load(paths[0]).shape),
           "on_the_fly_samples_per_s": fly, "on_the_fly_shape": fly_shape}
    cache = Cache(cache_dir)
    for mode in ("whole", "chunk"):
        ds = CTDataset(cache, SamplerConfig(mode=mode, size=SIZE, text="report"), seed=0)
        got, shape = rate(lambda i: ds[i]["image"], list(range(len(ds))), 20)
        out.update({f"cache_{mode}_samples_per_s": got, f"cache_{mode}_shape": shape,
                    f"speedup_{mode}": got / fly})
    return out


def drop_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed_read(path: Path, read, cold: bool, reps: int) -> float:
    """Median seconds of ``read(CachedVolume)`` on a fresh CachedVolume (fresh memmap) each time."""
    times = []
    for _ in range(reps):
        if cold:
            drop_page_cache(path / "image.npy")
        volume = CachedVolume(path)
        start = time.perf_counter()
        read(volume)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_chunk_vs_whole(work: Path, depth: int = 300, side: int = 256, chunk: int = 32, reps: int = 15) -> dict:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1500, size=(depth, side, side), dtype=np.int16)  # (Z, Y, X)
    body = np.ones_like(image, dtype=bool)
    path = write_cached_volume(work / "chunk-cache", "vol300", image, np.diag([3.0, 1.5, 1.5, 1.0]), {"body": body})
    z0 = (depth - chunk) // 2
    reads = {"slab": (lambda v: v.slab(z0, z0 + chunk), lambda v: v.slab(0, depth))}
    cfg_c, cfg_w = SamplerConfig(chunk_depth=chunk, text="report"), SamplerConfig(mode="whole", text="report")
    reads["sample"] = (lambda v: draw_sample(VolumeRecord(v), cfg_c, np.random.default_rng(0)),
                       lambda v: draw_sample(VolumeRecord(v), cfg_w, np.random.default_rng(0)))
    out = {"shape_zyx": [depth, side, side], "chunk": chunk}
    for what, (read_chunk, read_whole) in reads.items():
        for cold in (True, False):
            tag = f"{what}_{'cold' if cold else 'warm'}"
            t_chunk, t_whole = timed_read(path, read_chunk, cold, reps), timed_read(path, read_whole, cold, reps)
            out.update({f"{tag}_chunk_ms": 1e3 * t_chunk, f"{tag}_whole_ms": 1e3 * t_whole,
                        f"{tag}_ratio": t_chunk / t_whole})
    return out


def prepare_peak_rss(manifest: Path, out: Path) -> float:
    """Peak RSS in MiB of one `ctvlp prepare` process (workers 0), from os.wait4."""
    proc = subprocess.Popen([sys.executable, "-m", "ctvlp", "prepare", "--manifest", str(manifest),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"prepare failed on {manifest} (status {status})")
    return usage.ru_maxrss / 1024


def bench_prepare_memory(work: Path, matrix: int, counts: tuple[int, int] = (10, 40)) -> dict:
    manifest, _ = cohort(work, counts[1], matrix, "mem")
    df = Manifest.load(manifest).df
    out = {"matrix": matrix}
    for n in counts:
        sub = work / f"mem-{n}.parquet"
        Manifest(df.head(n)).save(sub)
        out[f"peak_rss_mib_{n}"] = prepare_peak_rss(sub, work / f"mem-cache-{n}")
    out["peak_rss_ratio"] = out[f"peak_rss_mib_{counts[1]}"] / out[f"peak_rss_mib_{counts[0]}"]
    return out


def save(results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = results["date"].replace(":", "").replace("-", "")[:13]
    path = RESULTS / f"data_pipeline-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    s, c, m = results["samples"], results["chunk_vs_whole"], results["prepare_memory"]
    line = (f"| {results['date']} | {results['machine']['cpu']}, {results['machine']['cores']} cores | "
            f"cache whole {s['speedup_whole']:.0f}x, chunk {s['speedup_chunk']:.0f}x faster than on-the-fly | "
            f"32/300 chunk read {c['slab_cold_ratio']:.3f}x whole (cold), {c['slab_warm_ratio']:.3f}x (warm) | "
            f"prepare peak RSS 40 vs 10 volumes {m['peak_rss_ratio']:.2f}x | `{results['command']}` |\n")
    md = RESULTS / "data_pipeline.md"
    if not md.is_file():
        md.write_text("| date | machine | sample speed | chunk read | prepare memory | command |\n|---|---|---|---|---|---|\n")
    with md.open("a") as f:
        f.write(line)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", help="scratch folder (default: a temporary one, removed at the end)")
    parser.add_argument("--volumes", type=int, default=3, help="volumes for the sample-speed comparison")
    parser.add_argument("--matrix", type=int, default=512, help="synth in-plane matrix for the speed comparison")
    parser.add_argument("--mem-matrix", type=int, default=256, help="synth in-plane matrix for the memory runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv]),
                   "torch_threads": 1, "samples": bench_samples(work, args.volumes, args.matrix),
                   "chunk_vs_whole": bench_chunk_vs_whole(work),
                   "prepare_memory": bench_prepare_memory(work, args.mem_matrix)}
    print(json.dumps(results, indent=2, default=str))
    print(f"saved {save(results)}")


if __name__ == "__main__":
    main()
