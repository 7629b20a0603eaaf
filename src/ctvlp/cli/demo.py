"""`ctvlp demo --out DIR`: the data pipeline end to end on the synthetic cohort.

synth (CT-RATE layout) -> `manifest ctrate` (the real adapter) -> `prepare` (the cache) -> a summary.
Training and zero-shot evaluation join this command when the training spine lands.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="synthesise a cohort, read it with the CT-RATE adapter, prepare the cache",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--n", type=int, default=200, help="volumes in the synthetic cohort (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the cohort (default 0)")
    p.add_argument("--workers", type=int, default=2, help="processes for synth and prepare (default 2)")
    p.set_defaults(func=run)
    return p


def _step(title: str, argv: list[str]) -> float:
    from ctvlp.cli import main

    print(f"\n== {title}: ctvlp {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(code)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    cohort, manifest, cache_dir = out / "cohort", out / "manifest.parquet", out / "cache"
    seconds = {
        "synth": _step("synthesise", ["synth", "--out", str(cohort), "--n", str(args.n), "--seed", str(args.seed),
                                      "--workers", str(args.workers)]),
        "manifest": _step("read with the CT-RATE adapter", ["manifest", "ctrate", str(cohort), "--radgenome",
                                                            str(cohort / "radgenome"), "--out", str(manifest)]),
        "prepare": _step("prepare the cache", ["prepare", "--manifest", str(manifest), "--out", str(cache_dir),
                                               "--workers", str(args.workers)]),
    }
    summary = _summary(cache_dir, seconds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n== cache: {summary['volumes']} volumes {summary['splits']}, slices per volume "
          f"{summary['slices_min']}-{summary['slices_max']} (median {summary['slices_median']}), "
          f"in-plane {summary['inplane_median']}, {summary['cache_mb']:.1f} MB on disk")
    print(f"   organs with z-extents: {', '.join(summary['organs'])}")
    print(f"   summary: {out / 'summary.json'}")
    return 0


def _summary(cache_dir: Path, seconds: dict[str, float]) -> dict:
    import numpy as np

    from ctvlp.data.cache import Cache

    cache = Cache(cache_dir)
    shapes = np.array([json.loads(s) for s in cache.index["shape"]])  # (N, 3) z, y, x
    organs = sorted({k for z in cache.index["z_extents"] for k in json.loads(z)})
    size = sum(f.stat().st_size for f in (cache_dir / "volumes").rglob("*") if f.is_file())
    return {"volumes": len(cache), "splits": cache.index["split"].value_counts().to_dict(),
            "slices_min": int(shapes[:, 0].min()), "slices_max": int(shapes[:, 0].max()),
            "slices_median": float(np.median(shapes[:, 0])),
            "inplane_median": [float(np.median(shapes[:, 1])), float(np.median(shapes[:, 2]))],
            "organs": organs, "cache_mb": size / 1e6, "seconds": seconds}
