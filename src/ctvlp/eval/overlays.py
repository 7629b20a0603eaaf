"""Segmentation overlays for the eval report: a CT slice with the reference and the predicted outline.

One figure per volume, two panels on the volume's stitched evaluation grid (what the model saw and
what was scored, :func:`ctvlp.eval.segmentation.segment_volumes`):

* **axial** at the slice with the largest reference area summed over structures (the largest
  predicted area when no structure is present, the middle slice when nothing is);
* **coronal** through the row (y) with the largest reference (else predicted, else middle) area, its
  aspect set by the z and x spacings so that millimetres look the same both ways.

Reference masks are solid outlines, predictions dashed, one colour per structure. Orientation as
radiologists view it (the grid is RAS): patient's right on the viewer's left, anterior up in the axial
panel, superior up in the coronal panel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ctvlp.eval.html import pyplot, png_base64


def _busiest(target: np.ndarray, pred: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of (Z, H, W) masks with the largest reference area, else predicted, else the middle."""
    for mask in (target, pred):
        area = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        if area.any():
            return int(area.argmax())
    return target.shape[axis] // 2


def _outline(ax, mask: np.ndarray, colour, style: str) -> None:
    if mask.any() and not mask.all():  # contour needs both sides of the 0.5 level
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linestyles=style, linewidths=1.2)


def overlay_figure(image: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor,
                   target: np.ndarray | torch.Tensor, names: Sequence[str], caption: str,
                   spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0)) -> dict:
    """``{"caption", "png_base64"}`` of one volume: ``image`` (Z, H, W) windowed to [-1, 1], ``pred`` and
    ``target`` (K, Z, H, W) bool for the K ``names`` (see the module docstring for the panels)."""
    image, pred, target = (np.asarray(x) for x in (image, pred, target))
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1:] != image.shape or len(names) != pred.shape[0]:
        raise ValueError(f"need image (Z, H, W) and pred/target (K, Z, H, W) for K names; got {image.shape}, "
                         f"{pred.shape}, {target.shape}, {len(names)} names")
    any_target, any_pred = target.any(axis=0), pred.any(axis=0)  # (Z, H, W)
    z, y = _busiest(any_target, any_pred, 0), _busiest(any_target, any_pred, 1)
    plt = pyplot()
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20").colors
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
    views = [(axes[0], lambda a: a[z][::-1, ::-1], 1.0, f"axial z={z}"),  # (Y, X): anterior up, right on the left
             (axes[1], lambda a: a[:, y][::-1, ::-1], spacing_zyx[0] / spacing_zyx[2], f"coronal y={y}")]  # (Z, X)
    for ax, cut, aspect, title in views:
        ax.imshow(cut(image), cmap="gray", vmin=-1, vmax=1, aspect=aspect, interpolation="nearest")
        for k in range(len(names)):
            colour = colours[k % len(colours)]
            _outline(ax, cut(target[k]), colour, "solid")
            _outline(ax, cut(pred[k]), colour, "dashed")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[k % len(colours)], label=name) for k, name in enumerate(names)]
    handles += [plt.Line2D([], [], color="k", linestyle="solid", label="reference"),
                plt.Line2D([], [], color="k", linestyle="dashed", label="prediction")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
    fig.subplots_adjust(bottom=0.18)
    return {"caption": caption, "png_base64": png_base64(fig)}


class OverlayCollector:
    """``on_volume`` of :func:`~ctvlp.eval.segmentation.segment_volumes` that draws the first ``limit``
    volumes it is given: ``figures`` the :func:`overlay_figure` dicts, captioned ``"<prefix><volume id>"``."""

    def __init__(self, names: Sequence[str], limit: int, prefix: str = ""):
        self.names, self.limit, self.prefix = list(names), limit, prefix
        self.figures: list[dict] = []

    def __call__(self, vid: str, image: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                 spacing_zyx: Sequence[float]) -> None:
        if len(self.figures) < self.limit:
            self.figures.append(overlay_figure(image, pred, target, self.names, f"{self.prefix}{vid}", spacing_zyx))
