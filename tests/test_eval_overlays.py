"""Segmentation overlays: which slice is drawn, radiological orientation, the collector's limit."""

from __future__ import annotations

import base64
import io

import matplotlib.image
import numpy as np
import pytest

from ctvlp.eval.overlays import OverlayCollector, _busiest, overlay_figure


def _decode(fig: dict) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(base64.b64decode(fig["png_base64"])), format="png")[..., :3]


def test_busiest_slice_prefers_the_reference_then_the_prediction_then_the_middle():
    target = np.zeros((6, 4, 4), bool)
    pred = np.zeros_like(target)
    assert _busiest(target, pred, 0) == 3 and _busiest(target, pred, 1) == 2  # nothing anywhere: the middle
    pred[1, 0, :] = True
    assert _busiest(target, pred, 0) == 1 and _busiest(target, pred, 1) == 0
    target[4, 1:3, 1:3] = True  # 4 voxels on z=4, 2 on rows y=1 and y=2 each
    target[2, 3, 0] = True
    assert _busiest(target, pred, 0) == 4 and _busiest(target, pred, 1) in (1, 2)


def test_axial_panel_shows_the_patients_right_anterior_corner_top_left():
    """A structure at high x (patient's right, RAS) and high y (anterior) must appear top-left of the axial
    panel, as radiologists view it; the image is black so the outline's blue is the only colour."""
    z, h, w = 5, 32, 32
    image = -np.ones((z, h, w), np.float32)
    target = np.zeros((1, z, h, w), bool)
    target[0, 2, 20:28, 20:28] = True  # y 20-27 (anterior half), x 20-27 (right half)
    fig = overlay_figure(image, target, target, ["aorta"], "case 1", spacing_zyx=(3.0, 1.0, 1.0))
    assert fig["caption"] == "case 1"
    rgb = _decode(fig)
    left = rgb[:, : rgb.shape[1] // 2]  # the axial panel
    black = np.argwhere(left.max(axis=2) < 0.05)  # the image area
    (r0, c0), (r1, c1) = black.min(axis=0), black.max(axis=0)
    blue = np.argwhere((left[..., 2] > 0.5) & (left[..., 0] < 0.3))  # tab10's first colour
    assert len(blue) > 20
    rows, cols = blue.mean(axis=0)
    assert (rows - r0) / (r1 - r0) < 0.5 and (cols - c0) / (c1 - c0) < 0.5  # top-left quadrant


def test_bad_shapes_raise_and_the_collector_stops_at_its_limit():
    image = np.zeros((3, 8, 8), np.float32)
    masks = np.zeros((2, 3, 8, 8), bool)
    with pytest.raises(ValueError, match="K names"):
        overlay_figure(image, masks, masks, ["only one"], "x")
    with pytest.raises(ValueError, match="Z, H, W"):
        overlay_figure(image[:2], masks, masks, ["a", "b"], "x")
    collect = OverlayCollector(["a", "b"], 2, "test volume ")
    for vid in ("v1", "v2", "v3"):
        collect(vid, image, masks, masks, (1.0, 1.0, 1.0))
    assert [f["caption"] for f in collect.figures] == ["test volume v1", "test volume v2"]
