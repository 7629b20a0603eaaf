"""One reconstruction: tissue classes -> HU with kernel-like blur and noise, plus its masks.

A scan (:class:`ScanSpec`) fixes the patient's pose, contrast agent, table and findings; each of
its reconstructions (:class:`ReconSpec`) has its own slice spacing, kernel and noise. The result is
int16 in HU, or in raw stored values (HU + 1024) for the volumes that reproduce CT-RATE's
rescale trap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ctvlp.data.synth.canvas import Canvas, Tissue
from ctvlp.data.synth.findings import Difficulty, Finding, set_finding_hu
from ctvlp.data.synth.geometry import Grid, GridSpec, Pose
from ctvlp.data.synth.painters import paint_findings
from ctvlp.data.synth.phantom import Anatomy, finish_regions, paint_anatomy

RAW_OFFSET = 1024
"""Raw volumes store HU + 1024 (CT-RATE's metadata intercept is -1024)."""
HU_RANGE = (-1024, 3071)


@dataclass(frozen=True)
class ScanSpec:
    """What the reconstructions of one scan share."""

    pose: Pose
    contrast: bool
    """Intravenous contrast (bright blood and heart chambers)."""
    table: bool
    """A patient table is in the field of view."""
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class ReconSpec:
    """What differs between reconstructions of one scan."""

    grid: GridSpec
    kernel: str
    """'soft' (smooth, low noise) or 'sharp' (crisp, noisy)."""
    noise_hu: float
    """Standard deviation of the noise added before the kernel blur."""
    raw: bool
    """Store HU + 1024 instead of HU."""
    seed: int
    """Seed of the noise."""


@dataclass
class Rendered:
    """A reconstruction in memory, (Z, Y, X) order."""

    stored: np.ndarray
    """int16 stored values (HU, or HU + 1024 when raw)."""
    regions: dict[str, np.ndarray]
    """RadGenome region name -> bool mask."""
    findings: dict[str, np.ndarray]
    """Label slug -> bool mask."""
    affine: np.ndarray
    """(4, 4) (x, y, z) index -> RAS mm, for the array transposed to (X, Y, Z)."""


BLUR_SIGMA = {"soft": 0.8, "sharp": 0.35}
"""In-plane Gaussian blur (voxels) of each kernel."""


NOISE_POOL = 1 << 22
"""Standard normal values drawn once per process (fixed seed); a volume's noise is a random window."""
_pool: list[np.ndarray] = []


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit Gaussian noise of ``shape``: a window of the shared pool at a random offset (cheap)."""
    size = int(np.prod(shape))
    if size > NOISE_POOL // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    if not _pool:
        _pool.append(np.random.default_rng(20260101).standard_normal(NOISE_POOL, dtype=np.float32))
    start = int(rng.integers(0, NOISE_POOL - size))
    return _pool[0][start:start + size].reshape(shape)


TEXTURE_POOL = 160
"""Side of the cube of smooth noise (drawn once per process) that lung texture windows are cut from."""
TEXTURE_HU = 25.0
"""Standard deviation of the lung parenchyma's smooth texture."""
_texture: list[np.ndarray] = []


def _lung_texture(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth unit-variance noise (correlation ~2 voxels) of ``shape``: a window of a shared cube."""
    if not _texture:
        cube = np.random.default_rng(20260102).standard_normal((TEXTURE_POOL,) * 3, dtype=np.float32)
        cube = ndimage.gaussian_filter(cube, 1.5, mode="wrap")  # (P, P, P)
        _texture.append(cube / cube.std())
    cube = _texture[0]
    reps = [-(-n // TEXTURE_POOL) for n in shape]
    if max(reps) > 1:
        cube = np.tile(cube, reps)
    starts = [int(rng.integers(0, cube.shape[i] - n + 1)) for i, n in enumerate(shape)]
    return cube[tuple(slice(s, s + n) for s, n in zip(starts, shape))]


def paint(anatomy: Anatomy, scan: ScanSpec, grid_spec: GridSpec, difficulty: Difficulty) -> Canvas:
    """Anatomy and findings as tissue classes and masks on one reconstruction's grid."""
    canvas = Canvas(Grid(grid_spec, scan.pose))
    cardiomegaly = [f for f in scan.findings if f.label == "Cardiomegaly"]
    canvas.heart_scale = cardiomegaly[0].items[0]["scale"] if cardiomegaly else 1.0
    paint_anatomy(canvas, anatomy, scan.table)
    set_finding_hu(canvas, difficulty, scan.contrast)
    paint_findings(canvas, anatomy, list(scan.findings))
    finish_regions(canvas)
    return canvas


def render(anatomy: Anatomy, scan: ScanSpec, recon: ReconSpec, difficulty: Difficulty) -> Rendered:
    canvas = paint(anatomy, scan, recon.grid, difficulty)
    hu = np.take(canvas.hu_table(scan.contrast), canvas.tissue)  # (Z, Y, X) float32
    rng = np.random.default_rng(recon.seed)
    lung = canvas.tissue == Tissue.LUNG
    hu += lung * ((40.0 * canvas.grid.b)[None] + TEXTURE_HU * _lung_texture(rng, hu.shape))  # dependent, mottled
    noise = _noise(rng, hu.shape) * np.float32(recon.noise_hu)  # (Z, Y, X)
    hu += noise * canvas.body[None]
    sigma = BLUR_SIGMA[recon.kernel]
    hu = ndimage.gaussian_filter(hu, sigma=(0.0, sigma, sigma), truncate=2.5)
    stored = np.clip(np.rint(hu), *HU_RANGE).astype(np.int16)
    if recon.raw:
        stored += RAW_OFFSET
    return Rendered(stored, canvas.regions, canvas.findings, recon.grid.affine(scan.pose))
