"""The chunk cache: per volume, int16 HU stored z-first so that a z-slab is one contiguous read.

Layout (docs/architecture.md)::

    CACHE/preprocessing.json            the PreprocessConfig + ctvlp version
    CACHE/volumes/<id>/image.npy        int16 (Z, Y, X), RAS
    CACHE/volumes/<id>/masks.npy        uint8 (Z, M, Y, ceil(X/8)): np.packbits of each mask along X
    CACHE/volumes/<id>/meta.json        shape, spacing_zyx, affine_zyx, mask_names, z_extents, ...
    CACHE/index/shard-i-of-N.parquet    manifest rows of the cached volumes + cache columns
    CACHE/failures/shard-i-of-N.csv     id, path, reason of the volumes that were skipped

A volume directory appears only complete: it is written under CACHE/volumes/.<id>.<pid>-<random>.tmp
and renamed (:func:`ctvlp.fsutil.atomic_path`); temporary directories left by a killed run are removed
when its shard is prepared again. A volume damaged later (a file truncated, overwritten or deleted) is
found by :meth:`Cache.bad_volumes` from its meta.json and the .npy headers and sizes, without reading a voxel.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ctvlp.data.manifest import unsafe_ids
from ctvlp.data.preprocess import PreprocessConfig
from ctvlp.data.volumes import check_mask_names, spacing_of
from ctvlp.errors import BadDatasetError
from ctvlp.io._convert import error_text
from ctvlp.fsutil import atomic_path
from ctvlp.io.volume import Volume

CONFIG_FILE = "preprocessing.json"
VOLUMES = "volumes"


def z_extents(masks: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """name -> [z0, z1) of the slices where the (Z, Y, X) mask is non-empty (absent when empty)."""
    out = {}
    for name, mask in masks.items():
        z = np.flatnonzero(mask.any(axis=(1, 2)))
        if z.size:
            out[name] = [int(z[0]), int(z[-1]) + 1]
    return out


def _write_files(directory: Path, vid: str, image_zyx: np.ndarray, affine_zyx: np.ndarray,
                 masks: dict[str, np.ndarray], extra_meta: dict | None) -> None:
    names = list(masks)
    np.save(directory / "image.npy", np.ascontiguousarray(image_zyx, dtype=np.int16))
    z, y, x = image_zyx.shape
    stacked = np.stack([masks[n] for n in names], axis=1) if names else np.zeros((z, 0, y, x), bool)
    np.save(directory / "masks.npy", np.packbits(stacked, axis=-1))  # (Z, M, Y, ceil(X/8))
    meta = {"id": vid, "shape": [z, y, x],
            "spacing_zyx": spacing_of(affine_zyx).tolist(),
            "affine_zyx": np.asarray(affine_zyx).tolist(), "mask_names": names,
            "z_extents": z_extents(masks), **(extra_meta or {})}
    (directory / "meta.json").write_text(json.dumps(meta))


def write_cached_volume(root: str | Path, vid: str, image_zyx: np.ndarray, affine_zyx: np.ndarray,
                        masks: dict[str, np.ndarray], extra_meta: dict | None = None) -> Path:
    """Write one volume atomically (temporary directory, then rename); returns its directory.

    ``image_zyx`` (Z, Y, X) HU, ``masks`` name -> (Z, Y, X) bool. A volume that already exists is
    kept (another process finished it first). On any error the temporary directory is removed; a
    failed write raises :class:`~ctvlp.errors.WriteError` naming the file. Temporaries of killed runs are
    removed by :func:`ctvlp.fsutil.remove_stale_temps`, once per run (``prepare`` does it).
    """
    final = Path(root) / VOLUMES / vid
    with atomic_path(final, replace=False, clean=False) as tmp:
        tmp.mkdir()
        _write_files(tmp, vid, image_zyx, affine_zyx, masks, extra_meta)
    return final


class BadVolume(NamedTuple):
    """A cached volume that cannot be read, and why."""

    id: str
    file: str
    """The missing or damaged file (or folder)."""
    reason: str


def npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy file's header, checked against the file's size; ValueError (or OSError)
    when the header does not parse, the array holds Python objects, or the size is not header + data."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy format version {version}")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        raise ValueError("not a C-order array of numbers")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise ValueError(f"{size} bytes where its header needs {expected} (truncated or overwritten)")
    return tuple(int(n) for n in shape), dtype


def check_volume(directory: Path) -> tuple[Path, str] | None:
    """(file, reason) of the first thing wrong with one cached volume, from meta.json and the .npy headers
    and sizes alone (no voxel is read); None when it is whole. Content overwritten in place with the same
    size and a valid header is not detected (there is no checksum)."""
    if not directory.is_dir():
        return directory, "cached volume folder is missing (the cache index lists it)"
    meta_path = directory / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
        z, y, x = (int(n) for n in meta["shape"])
        n_masks = len(meta["mask_names"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return meta_path, f"unreadable cache metadata ({error_text(err)})"
    expected = {"image.npy": ((z, y, x), np.dtype(np.int16)), "masks.npy": ((z, n_masks, y, -(-x // 8)), np.dtype(np.uint8))}
    for name, (shape, dtype) in expected.items():
        try:
            layout = npy_layout(directory / name)
        except FileNotFoundError:
            return directory / name, "cache file is missing"
        except (OSError, ValueError) as err:
            return directory / name, f"damaged cache file ({' '.join(str(err).split()) or type(err).__name__})"
        if layout != (shape, dtype):
            return directory / name, f"holds {layout[1]} {layout[0]} where meta.json says {dtype} {shape}"
    return None


class CachedVolume:
    """One cached volume, the sampler's :class:`~ctvlp.data.volumes.VolumeSource` backed by its folder; arrays
    are memory-mapped on first use (safe to create before forking)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        try:
            meta = json.loads((self.directory / "meta.json").read_text())
            self.vid: str = meta["id"]
            self.shape: tuple[int, int, int] = tuple(meta["shape"])  # type: ignore[assignment]
            self.affine_zyx = np.asarray(meta["affine_zyx"], dtype=np.float64)
            self.spacing_zyx = np.asarray(meta["spacing_zyx"], dtype=np.float64)
            self.mask_names: list[str] = list(meta["mask_names"])
            self.z_extents: dict[str, tuple[int, int]] = {k: tuple(v) for k, v in meta["z_extents"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise BadDatasetError(self.directory, f"not a cached volume ({error_text(err)})") from None
        self.meta = meta
        self._image: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._image is None:
            self._image, self._masks = (self._load(name) for name in ("image.npy", "masks.npy"))
        return self._image, self._masks

    def _load(self, name: str) -> np.ndarray:
        """Memory-map one array; a file gone or damaged since the cache was checked is a clear error."""
        try:
            return np.load(self.directory / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            detail = err.strerror if isinstance(err, OSError) and err.strerror else error_text(err)
            raise BadDatasetError(self.directory / name, f"cannot read the cached array ({detail}); delete the "
                                                         "volume folder and rerun `ctvlp prepare`") from None

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """int16 HU (z1 - z0, Y, X); reads only those slices."""
        return np.array(self._arrays()[0][z0:z1])

    def mask_slab(self, z0: int, z1: int, names: Sequence[str] | None = None) -> np.ndarray:
        """bool (M, z1 - z0, Y, X) for ``names`` (default: all, in ``mask_names`` order)."""
        names = check_mask_names(self.vid, self.mask_names, names)
        packed = np.asarray(self._arrays()[1][z0:z1])  # (z, M, Y, Xb)
        picked = packed[:, [self.mask_names.index(n) for n in names]]
        bits = np.unpackbits(picked, axis=-1, count=self.shape[2]).astype(bool)  # (z, M', Y, X)
        return bits.transpose(1, 0, 2, 3)

    def to_volume(self) -> Volume:
        """The whole cached image as a Volume (array (Z, Y, X), affine_zyx)."""
        return Volume(self.slab(0, self.shape[0]), self.affine_zyx, path=str(self.directory),
                      meta={"reader": "cache"})


class Cache:
    """A prepared cache directory: its preprocessing, its index, its volumes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        config_path = self.root / CONFIG_FILE
        if not config_path.is_file():
            raise BadDatasetError(self.root, f"not a ctvlp cache (no {CONFIG_FILE}); run `ctvlp prepare`")
        self.config = PreprocessConfig.from_dict(json.loads(config_path.read_text())["preprocess"])
        shards = sorted((self.root / "index").glob("*.parquet"))
        if not shards:
            raise BadDatasetError(self.root, "cache has no index (prepare did not finish any shard)")
        index = pd.concat([pd.read_parquet(p) for p in shards], ignore_index=True)
        if "id" not in index:  # every shard finished without a single volume
            raise BadDatasetError(self.root, "cache index lists no volume (see failures/)")
        self.index = index.drop_duplicates("id", keep="last").reset_index(drop=True)
        unsafe = unsafe_ids(self.index["id"])
        if unsafe:
            raise BadDatasetError(self.root / "index", f"volume id(s) that are not plain file names: {unsafe[:5]}")
        self._checked: dict[str, BadVolume | None] = {}

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ids(self) -> list[str]:
        return self.index["id"].tolist()

    def volume(self, vid: str) -> CachedVolume:
        return CachedVolume(self.root / VOLUMES / vid)

    def bad_volumes(self, ids: Iterable[str]) -> list[BadVolume]:
        """The volumes of ``ids`` whose files are missing or damaged (:func:`check_volume`), in ``ids`` order;
        each volume is checked once per :class:`Cache` (evaluation asks for the same splits again)."""
        ids = list(ids)
        for vid in ids:
            if vid not in self._checked:
                problem = check_volume(self.root / VOLUMES / vid)
                self._checked[vid] = problem and BadVolume(vid, str(problem[0]), problem[1])
        return [self._checked[vid] for vid in ids if self._checked[vid] is not None]
