"""Embedding many CT files: which paths are inputs, reading them in DataLoader workers, batching.

Which inputs a PATH gives (:func:`find_inputs`):

* a file: itself, whatever its name (a file no reader takes is skipped with the reason);
* a folder that holds DICOM files directly (a ``.dcm``/``.dicom``/``.ima`` file, or one of its first
  files starts with the DICOM preamble): one DICOM series, not searched further;
* any other folder: searched recursively (names starting with ``.`` ignored) for ``*.nii.gz``, ``*.nii``,
  ``*.nrrd``, ``*.nhdr``, ``*.mha``, ``*.mhd`` files and for DICOM series folders (as above), in sorted
  order;
* a path that does not exist: kept, and skipped with "no such file or folder".

Repeated inputs are kept once. :func:`embed_files` reads and preprocesses each input in a
:class:`torch.utils.data.DataLoader` worker (:class:`InputDataset`: ``read_ct`` checks, ``preprocess``,
the evaluation sample: :class:`~ctvlp.inference.model.InputPipeline`), and the main process stacks
samples of one shape into batches of up to ``batch_size`` for the encoder. A file that fails (not CT,
unreadable, one slice, over the voxel limit, or any other error while reading) is skipped with its reason;
the rest go through. At batch size 1 the embeddings equal :meth:`CtvlpModel.encode_volume`; larger
batches differ by float rounding only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ctvlp.errors import CtvlpError
from ctvlp.fsutil import atomic_path
from ctvlp.inference.model import CtvlpModel, InputPipeline
from ctvlp.io.load import DICOM_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES
from ctvlp.io.load import _has_dicom_preamble as has_dicom_preamble
from ctvlp.progress import progress_bar

VOLUME_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
DICOM_PROBE_FILES = 3
"""Files (without a volume or DICOM suffix) whose preamble is read to tell a DICOM folder."""


def _has_dicom_preamble(path: Path) -> bool:
    try:
        return has_dicom_preamble(path)
    except CtvlpError:  # unreadable: not taken as DICOM here, the reader names the problem
        return False


def is_dicom_folder(folder: Path) -> bool:
    """True when ``folder`` holds DICOM files directly (see the module docstring)."""
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError:
        return False
    if any(p.name.lower().endswith(DICOM_SUFFIXES) for p in files):
        return True
    unknown = [p for p in files if not p.name.lower().endswith(VOLUME_SUFFIXES)]
    return any(_has_dicom_preamble(p) for p in unknown[:DICOM_PROBE_FILES])


def _scan(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for d in list(dirs):
            if is_dicom_folder(Path(root) / d):
                found.append(Path(root) / d)
                dirs.remove(d)
        found += [Path(root) / f for f in files if not f.startswith(".") and f.lower().endswith(VOLUME_SUFFIXES)]
    return sorted(found)


def find_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The CT inputs the given paths name, in order, each once (rule: the module docstring)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not is_dicom_folder(path):
            found += _scan(path)
        else:
            found.append(path)
    return list(dict.fromkeys(found))


def slice_count(shape: Sequence[int], affine: np.ndarray) -> int:
    """Slices of a volume: its extent along the array axis closest to the body's axis (RAS z)."""
    return int(shape[int(np.argmax(np.abs(affine[2, :3])))])


class InputDataset(torch.utils.data.Dataset):
    """Item i: ``{"index", "path", "image" (C, D, H, W), "slice_mask" (D,), "n_slices", "seconds"}``, or
    ``{"index", "path", "error"}`` when the file cannot be taken (the reason, one line)."""

    def __init__(self, paths: Sequence[Path], pipeline: InputPipeline):
        self.paths = list(paths)
        self.pipeline = pipeline

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        start = time.perf_counter()
        try:
            volume, prepared = self.pipeline.prepare(path)
            sample = self.pipeline.sample(prepared)
        except CtvlpError as err:
            return {"index": i, "path": str(path), "error": err.reason}
        except Exception as err:  # one bad file must not end a batch job: report it and go on
            return {"index": i, "path": str(path), "error": f"{type(err).__name__}: {err}"}
        return {"index": i, "path": str(path), "image": sample["image"], "slice_mask": sample["slice_mask"],
                "n_slices": slice_count(volume.shape, volume.affine), "seconds": time.perf_counter() - start}


def _keep(item: dict) -> dict:
    return item


@dataclass
class EmbedResult:
    """Embedded inputs in input order, and the skipped ones with their reasons."""

    paths: list[str] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    """(N, D) float32, L2-normalised."""
    n_slices: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    """Reading + preprocessing + sampling time of each input (in its worker)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason)."""


def input_loader(paths: Sequence[Path], pipeline: InputPipeline, workers: int) -> torch.utils.data.DataLoader:
    """Items of :class:`InputDataset` one by one, in order, read by ``workers`` processes (0: this one)."""
    return torch.utils.data.DataLoader(InputDataset(paths, pipeline), batch_size=None, shuffle=False,
                                       num_workers=workers, collate_fn=_keep)


@contextlib.contextmanager
def encoder_threads(workers: int):
    """Leave the cores to the reading workers: the encoder gets max(1, cores - workers) torch threads while
    they run (an OpenMP thread on a core a worker holds spin-waits: 3.5x slower measured with 2 workers
    on 2 cores), restored afterwards."""
    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers:
        torch.set_num_threads(max(1, min(before, cores - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def embed_files(model: CtvlpModel, paths: Sequence[str | os.PathLike], workers: int = 2,
                batch_size: int = 1, progress: bool = False) -> EmbedResult:
    """Embed the inputs :func:`find_inputs` gives for ``paths`` (see the module docstring); ``progress``:
    a bar of the inputs done (:func:`ctvlp.progress.progress_bar`)."""
    if workers < 0 or batch_size < 1:
        raise CtvlpError(None, f"workers must be >= 0 and batch size >= 1, got {workers} and {batch_size}")
    inputs = find_inputs(paths)
    with encoder_threads(workers), progress_bar(len(inputs), "embed", "vol", progress) as bar:
        return _embed(model, inputs, workers, batch_size, bar)


def _embed(model: CtvlpModel, inputs: list[Path], workers: int, batch_size: int, bar) -> EmbedResult:
    done: dict[int, tuple[np.ndarray, dict]] = {}
    pending: dict[tuple, list[dict]] = {}
    skipped: dict[int, tuple[str, str]] = {}

    def flush(key: tuple) -> None:
        items = pending.pop(key)
        images = torch.stack([torch.from_numpy(it["image"]) for it in items])  # (B, C, D, H, W)
        masks = torch.stack([torch.from_numpy(it["slice_mask"]) for it in items])  # (B, D)
        for it, emb in zip(items, model.encode_samples(images, masks).numpy()):
            done[it["index"]] = (emb, it)
        bar.update(len(items))

    for item in input_loader(inputs, model.inputs, workers):
        if "error" in item:
            skipped[item["index"]] = (item["path"], item["error"])
            bar.update(1)
            continue
        key = item["image"].shape
        pending.setdefault(key, []).append(item)
        if len(pending[key]) == batch_size:
            flush(key)
    for key in list(pending):
        flush(key)
    order = sorted(done)
    dim = int(model.model.cfg.embed_dim)
    embeddings = np.stack([done[i][0] for i in order]).astype(np.float32) if order else np.zeros((0, dim), np.float32)
    return EmbedResult(paths=[done[i][1]["path"] for i in order], embeddings=embeddings,
                       n_slices=[int(done[i][1]["n_slices"]) for i in order],
                       seconds=[float(done[i][1]["seconds"]) for i in order],
                       skipped=[skipped[i] for i in sorted(skipped)])



def write_embeddings(result: EmbedResult, model: CtvlpModel, out: str | os.PathLike) -> Path:
    """Parquet, one row per embedded input: ``path`` (str), ``embedding`` (fixed-size list of D float32),
    ``model`` (the checkpoint or export path), ``step`` (its training step), ``n_slices``,
    ``preprocess_seconds``; the schema metadata ``ctvlp`` holds {recipe, step, model, dim}. Written atomically:
    a killed run leaves no half table under ``out``."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    n, dim = len(result.paths), int(model.model.cfg.embed_dim)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(result.embeddings.reshape(-1), pa.float32()), dim)
    table = pa.table({"path": pa.array(result.paths, pa.string()), "embedding": embedding,
                      "model": pa.array([model.spec.path] * n, pa.string()),
                      "step": pa.array([model.spec.step] * n, pa.int64()),
                      "n_slices": pa.array(result.n_slices, pa.int32()),
                      "preprocess_seconds": pa.array(result.seconds, pa.float64())})
    meta = {"recipe": model.spec.recipe, "step": model.spec.step, "model": model.spec.path, "dim": dim}
    with atomic_path(out) as tmp:
        pq.write_table(table.replace_schema_metadata({"ctvlp": json.dumps(meta)}), tmp)
    return out


def read_embeddings(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(paths, (N, D) float32 embeddings) of a file :func:`write_embeddings` wrote."""
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["path", "embedding"])
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    return table.column("path").to_pylist(), column.flatten().to_numpy().astype(np.float32).reshape(-1, dim)


def write_skipped(result: EmbedResult, out: str | os.PathLike) -> Path:
    """CSV with the columns path, reason (a header only when nothing was skipped), written atomically."""
    import pandas as pd

    # deferred on purpose: pandas (also under data.manifest) only for this list; embedding never loads it
    from ctvlp.data.manifest import save_table

    return save_table(pd.DataFrame(result.skipped, columns=["path", "reason"]), out)
