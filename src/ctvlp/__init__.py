"""ctvlp: vision-language pre-training on 3D CT."""

from __future__ import annotations

from ctvlp.errors import CtvlpError

__version__ = "0.1.0"


def load_volume(path, **kwargs):
    """Read NIfTI, a DICOM series folder, NRRD or MHA into a :class:`Volume` in HU.

    See :func:`ctvlp.io.load.load_volume` for the options.
    """
    from ctvlp.io.load import load_volume as _load

    return _load(path, **kwargs)


def load_model(path, **kwargs):
    """A trained model (checkpoint file, run folder or ``ctvlp export`` folder) as a
    :class:`ctvlp.inference.CtvlpModel`; see :func:`ctvlp.inference.load.load_model` for the options.
    """
    from ctvlp.inference.load import load_model as _load

    return _load(path, **kwargs)


def __getattr__(name: str):
    """``ctvlp.Volume``, imported on first use: nibabel and numpy stay unloaded for `ctvlp --help`."""
    if name == "Volume":
        from ctvlp.io.volume import Volume

        return Volume
    raise AttributeError(f"module 'ctvlp' has no attribute {name!r}")


__all__ = ["CtvlpError", "Volume", "load_model", "load_volume", "__version__"]
