"""Checkpoints written: atomic, self-contained (config, preprocessing, tokenizer), resumable, keep-last-N.

A checkpoint is one ``torch.save`` file ``OUT/checkpoints/step-0000100.pt`` holding

- ``format``/``version``: ``"ctvlp-checkpoint"``, :data:`~ctvlp.models.store.FORMAT_VERSION`, and the ctvlp version;
- ``config``: the resolved run config (``TrainConfig``) as a plain dict;
- ``preprocess``: the cache's preprocessing (spacing, HU window, crop), so inference needs nothing else;
- ``tokenizer``: the text tower's tokenizer files as ``{name: bytes}``;
- ``label_names``: the label vocabulary the model was evaluated on;
- ``prompts``: prompt styles made for the model (the ``corpus`` style mined from its training reports), or {};
- ``model``, ``optimizer``, ``scheduler``: state dicts; ``step``, ``epoch``, ``batch_in_epoch``;
- ``rng``: torch / numpy / python generator states, so ``--resume`` continues exactly.

Everything in it is a tensor or a plain value (str, bytes, int, float, bool, None, list, tuple, dict), so
:func:`ctvlp.models.store.load_checkpoint`, the one reader, loads it with ``torch.load(weights_only=True)``
only. The generator states of numpy and python are stored as plain lists and numbers (see :func:`rng_state`).

It is written to a temporary file in the same folder and renamed, so a kill never leaves half a file.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ctvlp import __version__
from ctvlp.fsutil import atomic_path
from ctvlp.models.store import FORMAT, FORMAT_VERSION, list_checkpoints


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
