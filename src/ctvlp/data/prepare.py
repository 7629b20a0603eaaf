"""`prepare`: a manifest -> a cache, resumable, shardable, parallel, with bad volumes listed not fatal.

Each volume is one task: read (``adapters.load_row``), preprocess, write atomically. The parent keeps
only small per-volume records, so memory stays flat however many volumes there are.

Faults: a kill leaves only whole volumes (a rerun skips them and goes on); a volume that cannot be read
is skipped and listed, but a write that fails (disk full) stops the run with that error, since every
later volume would fail the same way and be listed as bad data. One process prepares a shard at a time
(``CACHE/.lock-shard-i-of-N``; a second one refuses, naming the first's pid); shards run side by side,
and the first to start a new cache records its preprocessing while the others wait (``CACHE/.lock-config``).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ctvlp import __version__
from ctvlp.data.adapters import load_row
from ctvlp.data.adapters.fixes import apply_spacing_hint
from ctvlp.data.cache import CONFIG_FILE, VOLUMES, write_cached_volume
from ctvlp.data.manifest import Manifest, save_table
from ctvlp.data.preprocess import PreprocessConfig, preprocess
from ctvlp.errors import BadDatasetError, BadVolumeError, CtvlpError, WriteError
from ctvlp.fsutil import LockBusy, atomic_write_text, hold_lock, lock_fds, remove_stale_temps, write_errors
from ctvlp.io.load import load_volume
from ctvlp.io.volume import Volume
from ctvlp.progress import progress_bar


CONFIG_LOCK = ".lock-config"
"""Held while a shard records or compares the cache's preprocessing.json."""


class CacheBusyError(CtvlpError):
    """Another live process is preparing the same shard of the same cache."""


@dataclass
class PrepareReport:
    """What one `prepare` run did."""

    done: int = 0
    cached: int = 0
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    index_path: Path | None = None
    failures_path: Path | None = None


def _load_mask(spec: str, row: dict) -> Volume:
    """'path' (non-zero = inside) or 'path#value' (one label of a multi-label map) -> boolean Volume.

    The row's ``spacing_hint`` fix is applied as to its volume (a mask made on a CT-RATE volume
    shares its unset header), so both land on the same grid.
    """
    path, _, value = spec.partition("#")
    try:
        label = float(value) if value else None
    except ValueError:
        raise BadVolumeError(path, f"mask label '{value}' after '#' is not a number") from None
    mask = apply_spacing_hint(load_volume(path, require_ct=False), row.get("spacing_hint") or None)
    mask.array = (mask.array != 0) if label is None else (mask.array == label)
    return mask


def prepare_one(row: dict, root: str, config_dict: dict) -> dict:
    """Worker task: returns {"id", "status": "done"|"failed", "reason"?, "seconds"}; a failed write raises."""
    start = time.perf_counter()
    try:
        volume = load_row(row)
        masks = {name: _load_mask(spec, row) for name, spec in Manifest.masks_of(row).items()}
        out = preprocess(volume, masks, PreprocessConfig.from_dict(config_dict))
        write_cached_volume(root, row["id"], out.image, out.affine_zyx, out.masks,
                            {"source_path": row["path"], "hu_decision": volume.meta.get("hu_decision", "")})
        return {"id": row["id"], "status": "done", "seconds": time.perf_counter() - start}
    except WriteError:
        raise  # the disk, not the volume: stop the run
    except CtvlpError as err:
        reason = err.reason if err.path in (None, row["path"]) else str(err)
    except Exception as err:  # an unexpected reader failure must not stop the dataset
        reason = f"{type(err).__name__}: {err}"
    return {"id": row["id"], "path": row["path"], "status": "failed", "reason": reason,
            "seconds": time.perf_counter() - start}


def _init_worker(locks: list[int]) -> None:
    import torch

    torch.set_num_threads(1)
    for fd in locks:  # the shard lock ends with the parent, even while a worker of a killed run finishes
        os.close(fd)


def check_config(root: Path, config: PreprocessConfig) -> None:
    """Record the config in a new cache; refuse a cache made with another one. Shards that start on a new
    cache at the same moment take turns (``CONFIG_LOCK``): the first records, the others compare."""
    path = root / CONFIG_FILE
    with hold_lock(root / CONFIG_LOCK, wait=True):
        if not path.is_file():
            atomic_write_text(path, json.dumps({"preprocess": config.to_dict(), "ctvlp": __version__}, indent=2))
            return
        recorded = json.loads(path.read_text())["preprocess"]
    if recorded != config.to_dict():
        raise BadDatasetError(root, f"cache was prepared with {recorded}, not {config.to_dict()}; "
                                    "use another --out or the same settings")


@contextlib.contextmanager
def shard_lock(root: Path, shard: tuple[int, int]):
    """Hold ``CACHE/.lock-shard-i-of-N`` for the block; a second process of the same shard refuses."""
    i, n = shard
    try:
        with hold_lock(root / f".lock-shard-{i}-of-{n}", wait=False):
            yield
    except LockBusy as busy:
        raise CacheBusyError(root, f"shard {i}/{n} is being prepared by process {busy.holder or '(unknown)'} "
                                   f"(it holds {busy.path}); wait for it to finish or use another --out") from None


def _run_tasks(rows: list[dict], root: Path, config: PreprocessConfig, workers: int, progress):
    args = [(row, str(root), config.to_dict()) for row in rows]
    if workers <= 1:
        for a in args:
            yield prepare_one(*a)
            progress.update(1)
        return
    with mp.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(lock_fds(),),
                                     maxtasksperchild=50) as pool:
        for result in pool.imap_unordered(_star, args, chunksize=1):
            yield result
            progress.update(1)


def _star(a: tuple) -> dict:
    return prepare_one(*a)


def _index_rows(manifest_rows: list[dict], root: Path) -> pd.DataFrame:
    """Manifest rows of the cached volumes + cache columns from their meta.json."""
    records = []
    for row in manifest_rows:
        meta_path = root / VOLUMES / row["id"] / "meta.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            records.append({**row, "shape": json.dumps(meta["shape"]), "num_slices": meta["shape"][0],
                            "mask_names": json.dumps(meta["mask_names"]),
                            "z_extents": json.dumps(meta["z_extents"])})
    return pd.DataFrame.from_records(records)


def prepare(manifest: Manifest, root: str | Path, config: PreprocessConfig, *, shard: tuple[int, int] = (0, 1),
            workers: int = 0, limit: int | None = None, progress: bool = True) -> PrepareReport:
    """Prepare this shard's rows of ``manifest`` into ``root``; see the module docstring. ``progress``: a bar
    of the volumes (:func:`ctvlp.progress.progress_bar`)."""
    root = Path(root)
    with write_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    with shard_lock(root, shard):
        check_config(root, config)
        return _prepare_shard(manifest, root, config, shard, workers, limit, progress)


def _prepare_shard(manifest: Manifest, root: Path, config: PreprocessConfig, shard: tuple[int, int], workers: int,
                   limit: int | None, progress: bool) -> PrepareReport:
    i, n = shard
    rows = [manifest.row(k) for k in range(len(manifest)) if k % n == i][:limit]
    todo = [r for r in rows if not (root / VOLUMES / r["id"] / "meta.json").is_file()]
    remove_stale_temps(root / VOLUMES, [r["id"] for r in todo])  # left by a killed run of this shard
    report = PrepareReport(cached=len(rows) - len(todo))
    start = time.perf_counter()
    bar = progress_bar(len(todo), "prepare", "vol", progress)
    try:
        for result in _run_tasks(todo, root, config, workers, bar):
            if result["status"] == "done":
                report.done += 1
            else:
                report.failed.append({k: result[k] for k in ("id", "path", "reason")})
    finally:
        bar.close()
    report.seconds = time.perf_counter() - start
    name = f"shard-{i}-of-{n}"
    report.index_path = save_table(_index_rows(rows, root), root / "index" / f"{name}.parquet")
    report.failures_path = save_table(pd.DataFrame(report.failed, columns=["id", "path", "reason"]),
                                      root / "failures" / f"{name}.csv")
    return report
