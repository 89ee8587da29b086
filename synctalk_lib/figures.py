"""Static figures of a preprocessed dataset, for notebooks and reports (matplotlib, headless).

Functions return a `matplotlib.figure.Figure` and never call `plt.show()`; Jupyter displays a
returned figure, scripts save it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import crop
from .preprocess import PreparedDataset


def crop_contact_sheet(ds: PreparedDataset, n: int = 12, cols: int = 6,
                       path: str | Path | None = None) -> Figure:
    """Evenly spaced cached crops with their landmarks and the generator's mask rectangle.

    Landmarks should sit on the face and the mouth well inside the box: if the chin is cut
    or the box drifts, the crop rule or the landmark backend is wrong for this video.
    """
    crops, points, boxes, found = ds.crops(), ds.points(), ds.boxes(), ds.found()
    size = crops.shape[1]
    idx = np.linspace(0, ds.n_frames - 1, min(n, ds.n_frames)).round().astype(int)
    rows = int(np.ceil(len(idx) / cols))
    fig = Figure(figsize=(2.2 * cols, 2.35 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    ccfg = ds.config.crop
    x0, y0, x1, y1 = (v + ccfg.ring for v in crop.mask_rect(ccfg))
    for ax, i in zip(axes.flat, idx):
        ax.imshow(crops[i])
        scale = size / (boxes[i, 2] - boxes[i, 0])
        local = (points[i] - boxes[i, :2]) * scale
        ax.scatter(local[:, 0], local[:, 1], s=0.6, c="cyan" if found[i] else "orange")
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                               ec="yellow", lw=0.8, ls="--"))
        ax.set_title(f"frame {i} ({i / ds.meta['fps']:.1f} s)"
                     + ("" if found[i] else " filled"), fontsize=8)
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.axis("off")
    for ax in axes.flat[len(idx):]:
        ax.axis("off")
    fig.suptitle(f"{ds.paths.name}: {ds.n_frames} crops at {size} px "
                 "(dots: landmarks, dashed: area the generator fills)", fontsize=10)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def box_overview(ds: PreparedDataset, frame_index: int = 0,
                 path: str | Path | None = None) -> Figure:
    """One full frame with its crop box, and the box's position and size over time."""
    frame = next(iter(ds.frames().iter_frames(start=frame_index, count=1)))
    boxes = ds.boxes()
    raw = np.load(ds.paths.cached("boxes_raw.npy"))
    t = np.arange(len(boxes)) / ds.meta["fps"]
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_img, ax_pos = fig.subplots(1, 2, width_ratios=[1, 2])
    ax_img.imshow(frame)
    b = boxes[frame_index]
    ax_img.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec="lime", lw=1.5))
    ax_img.set_title(f"frame {frame_index} and its crop box", fontsize=9)
    ax_img.axis("off")
    for k, label in ((0, "x0"), (1, "y0"), (2, "x1"), (3, "y1")):
        ax_pos.plot(t, raw[:, k], lw=0.5, alpha=0.5)
        ax_pos.plot(t, boxes[:, k], lw=1.2, label=label)
    ax_pos.set_xlabel("time (s)")
    ax_pos.set_ylabel("pixels")
    ax_pos.set_title("crop box over time (thin: raw, thick: smoothed)", fontsize=9)
    ax_pos.legend(fontsize=8, ncols=4)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig
