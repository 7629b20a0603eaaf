"""Shared by the benchmarks: what a saved result records about the machine, saving it, median timing."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch


def machine(**extra) -> dict:
    """Platform, CPU model, cores, Python and torch versions, plus ``extra`` fields."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, **extra}


RESULTS = Path(__file__).resolve().parent / "results"


def save_result(name: str, payload: dict, tag: str | None = None) -> Path:
    """Write ``payload`` with today's date and the machine to results/<name>-<date>[-<tag>].json (a tag keeps a
    partial run, e.g. one size, from replacing the day's full one); print the path."""
    date = datetime.date.today().isoformat()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{date}{'-' + tag if tag else ''}.json"
    record = {"date": date, "machine": machine(torch_threads=torch.get_num_threads()), **payload}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out}")
    return out


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
