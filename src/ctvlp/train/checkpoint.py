"""Checkpoints: atomic, self-contained (config, preprocessing, tokenizer), resumable, keep-last-N.

A checkpoint is one ``torch.save`` file ``OUT/checkpoints/step-0000100.pt`` holding

- ``format``/``version``: ``"ctvlp-checkpoint"``, :data:`FORMAT_VERSION`, and the ctvlp version;
- ``config``: the resolved :class:`~ctvlp.train.config.TrainConfig` as a plain dict;
- ``preprocess``: the cache's preprocessing (spacing, HU window, crop), so inference needs nothing else;
- ``tokenizer``: the text tower's tokenizer files as ``{name: bytes}``;
- ``label_names``: the label vocabulary the model was evaluated on;
- ``prompts``: prompt styles made for the model (the ``corpus`` style mined from its training reports), or {};
- ``model``, ``optimizer``, ``scheduler``: state dicts; ``step``, ``epoch``, ``batch_in_epoch``;
- ``rng``: torch / numpy / python generator states, so ``--resume`` continues exactly.

Everything in it is a tensor or a plain value (str, bytes, int, float, bool, None, list, tuple, dict):
it is read with ``torch.load(weights_only=True)`` only, so a crafted file cannot run code when loaded.
The generator states of numpy and python are stored as plain lists and numbers (see :func:`rng_state`).
Format 1 (numpy objects in ``rng``) needed unpickling and is refused, like any file that does.

It is written to a temporary file in the same folder and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ctvlp import __version__
from ctvlp.errors import CtvlpError
from ctvlp.fsutil import atomic_path

FORMAT = "ctvlp-checkpoint"
FORMAT_VERSION = 2
_NAME = re.compile(r"^step-(\d{7,})\.pt$")


class CheckpointError(CtvlpError):
    """A checkpoint that cannot be read or is not a ctvlp checkpoint of this version."""


_UNSAFE = re.compile(r"Unsupported global: GLOBAL (\S+)")


def rng_state() -> dict:
    """The torch / numpy / python generator states as a tensor and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()  # MT19937: keys (624,) uint32
    version, internal, gauss = random.getstate()  # internal: 624 words + position
    return {"torch": torch.get_rng_state(),
            "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached_gaussian)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss}}


def set_rng_state(state: dict) -> None:
    """Restore the generators from :func:`rng_state`'s dict."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))


def save_checkpoint(folder: Path, state: dict, keep_last: int) -> Path:
    """Write ``state`` (plus format fields) as ``folder/step-NNNNNNN.pt`` atomically; prune old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state['step']:07d}.pt"
    payload = {"format": FORMAT, "version": FORMAT_VERSION, "ctvlp_version": __version__, **state}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    for old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first (by step)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file (or the latest one in a run/checkpoints folder), checking its format."""
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
        found = latest_checkpoint(folder)
        if found is None:
            raise CheckpointError(path, "no checkpoint (step-NNNNNNN.pt) in this folder")
        path = found
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    state = _read(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(path, "not a ctvlp checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointError(path, f"checkpoint format version {state.get('version')} (written by ctvlp "
                                    f"{state.get('ctvlp_version')}); this ctvlp {__version__} reads version "
                                    f"{FORMAT_VERSION}")
    state["path"] = str(path)
    return state


def _read(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain values only; anything else is refused unread."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = _UNSAFE.search(str(err))
        if unsafe is None:
            raise CheckpointError(path, "not a readable checkpoint (truncated or corrupt?): not a torch.save "
                                        "file of tensors and plain values") from None
        raise CheckpointError(path, f"refused: reading it would unpickle {unsafe.group(1)}, which can run code; "
                                    f"ctvlp reads checkpoints with torch.load(weights_only=True) only. A checkpoint "
                                    f"of format 1 (older ctvlp) needs unpickling too: train it again with this "
                                    f"ctvlp") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(path, f"not a readable checkpoint (truncated or corrupt?): {reason}") from None
