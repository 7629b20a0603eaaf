"""An embedding index of CT files and text retrieval over it (``ctvlp index build``, ``ctvlp retrieve``).

Layout of an index folder ``IDX``::

    index.json           {"format": "ctvlp-index", "format_version": 1, "ctvlp_version", "dim", "count",
                          "files" (the embedded inputs, in row order), "skipped" (how many),
                          "model": {"source" (checkpoint or export path), "recipe", "step",
                                    "fingerprint" (sha256 of the parameters, :func:`model_fingerprint`)}}
    embeddings.parquet   ``ctvlp embed``'s table (:func:`ctvlp.inference.batch.write_embeddings`)
    skipped.csv          path, reason of the inputs that were not embedded
    model/               ``ctvlp export`` of the model: queries are encoded with it, offline

A query model must be the index's own: :func:`query_model` loads ``model/`` (or a checkpoint the
caller names) and refuses it when its fingerprint differs from the one recorded at build time.
:func:`search` ranks the files by cosine similarity to the query text: s_i = <e_i / |e_i|, t / |t|>,
top k by s (ties in row order).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctvlp import __version__
from ctvlp.errors import BadIndexError, InferenceError
from ctvlp.fsutil import atomic_path, check_replaceable
from ctvlp.inference.batch import EmbedResult, read_embeddings, write_embeddings, write_skipped
from ctvlp.inference.export import export_model
from ctvlp.inference.load import load_model
from ctvlp.inference.model import CtvlpModel

FORMAT = "ctvlp-index"
FORMAT_VERSION = 1
INDEX_JSON = "index.json"
EMBEDDINGS = "embeddings.parquet"
SKIPPED = "skipped.csv"
MODEL_DIR = "model"


def model_fingerprint(model: CtvlpModel) -> str:
    """sha256 of every parameter's name, dtype, shape and bytes, in name order (equal for a checkpoint and
    its export)."""
    digest = hashlib.sha256()
    for name, param in sorted(model.model.named_parameters()):
        tensor = param.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_index(result: EmbedResult, model: CtvlpModel, out: str | os.PathLike) -> Path:
    """Write the index folder ``out`` (layout: the module docstring) for ``embed_files``' result. The folder
    is written under a temporary name and renamed when complete (it replaces an earlier index there; any
    other non-empty folder is refused), so a killed build leaves no half index under ``out``."""
    out = Path(out)
    check_replaceable(out, INDEX_JSON, FORMAT)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        write_embeddings(result, model, tmp / EMBEDDINGS)
        write_skipped(result, tmp / SKIPPED)
        export_model(model, tmp / MODEL_DIR)
        (tmp / INDEX_JSON).write_text(json.dumps(_index_meta(result, model), indent=2) + "\n")
    return out


def _index_meta(result: EmbedResult, model: CtvlpModel) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "ctvlp_version": __version__,
            "dim": int(result.embeddings.shape[1]), "count": len(result.paths), "files": list(result.paths),
            "skipped": len(result.skipped),
            "model": {"source": model.spec.path, "recipe": model.spec.recipe, "step": model.spec.step,
                      "fingerprint": model_fingerprint(model)}}


@dataclass
class EmbeddingIndex:
    folder: Path
    meta: dict
    """index.json."""
    paths: list[str]
    embeddings: np.ndarray
    """(N, D) float32."""


def load_index(folder: str | os.PathLike) -> EmbeddingIndex:
    """The index in ``folder``; :class:`BadIndexError` when it is not one (of this format version)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / INDEX_JSON).read_text())
    except (OSError, ValueError) as err:
        raise BadIndexError(folder, f"not a ctvlp index (no readable {INDEX_JSON}: {err}); build one with "
                                    "`ctvlp index build`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise BadIndexError(folder / INDEX_JSON, f"not a ctvlp index (format is not {FORMAT!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BadIndexError(folder, f"index format version {meta.get('format_version')}; this ctvlp reads "
                                    f"{FORMAT_VERSION}: build the index again")
    try:
        paths, embeddings = read_embeddings(folder / EMBEDDINGS)
    except Exception as err:  # pyarrow's own errors: a missing or damaged table
        raise BadIndexError(folder / EMBEDDINGS, f"unreadable embeddings ({type(err).__name__}: {err})") from None
    if paths != meta.get("files") or embeddings.shape[1] != meta.get("dim"):
        raise BadIndexError(folder, f"{EMBEDDINGS} does not match {INDEX_JSON} (files or dimension differ)")
    return EmbeddingIndex(folder, meta, paths, embeddings)


def query_model(index: EmbeddingIndex, checkpoint: str | os.PathLike | None = None,
                device: torch.device | str = "cpu") -> CtvlpModel:
    """The model that encodes queries, on ``device``: the index's ``model/`` export, or ``checkpoint``;
    refused when its parameters are not those the index was built with."""
    source = index.folder / MODEL_DIR if checkpoint is None else Path(checkpoint)
    model = load_model(source, device=device)
    if model_fingerprint(model) != index.meta["model"]["fingerprint"]:
        built = index.meta["model"]
        raise BadIndexError(source, f"this model differs from the one index {index.folder} was built with "
                                    f"({built['source']}, step {built['step']}): its embeddings are not comparable")
    return model


def search(index: EmbeddingIndex, model: CtvlpModel, query: str, k: int = 10) -> list[dict]:
    """[{rank, path, score}] of the ``k`` files most similar to ``query`` (cosine; the module docstring)."""
    if not isinstance(query, str) or not query.strip():
        raise InferenceError(None, "empty query: give the text to search for")
    if k < 1:
        raise InferenceError(None, f"k must be at least 1, got {k}")
    text = model.encode_text([query])[0]  # (D,)
    gallery = torch.nn.functional.normalize(torch.from_numpy(index.embeddings), dim=-1)  # (N, D)
    scores = gallery @ torch.nn.functional.normalize(text.float(), dim=-1)  # (N,)
    top = torch.topk(scores, min(k, len(index.paths)), sorted=True)
    return [{"rank": r + 1, "path": index.paths[i], "score": float(s)}
            for r, (s, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()))]
