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
from .dataset import PreparedDataset


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


def loss_curves(history: list[dict], path: str | Path | None = None) -> Figure:
    """Training losses per logged step (log scale) and validation L1."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2)
    steps = [h["step"] for h in history]
    # a short run (a 2-minute budget on a busy CPU logs one or two steps) draws no line
    # between points, so few points are drawn as dots
    marker = "o" if len(steps) < 20 else None
    for key in ("loss", "l1", "perceptual", "sync", "temporal"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax_loss.plot(steps, [np.nan if v is None else v for v in values], label=key,
                         marker=marker, ms=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training losses", fontsize=9)
    ax_loss.legend(fontsize=8)
    val = [(h["step"], h["val_l1"]) for h in history if "val_l1" in h]
    if val:
        ax_val.plot(*zip(*val), marker="o", color="C3")
    ax_val.set_xlabel("step")
    ax_val.set_title("validation L1 (held-back frames)", fontsize=9)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


class LiveLossPlot:
    """Redraws `loss_curves` in place in a notebook output while training runs."""

    def __init__(self, every: int = 1):
        from IPython.display import display

        self.every, self.calls = every, 0
        self.handle = display(Figure(figsize=(1, 1)), display_id=True)

    def __call__(self, history: list[dict]) -> None:
        self.calls += 1
        if self.handle is not None and self.calls % self.every == 0:
            self.handle.update(loss_curves(history))


def real_vs_generated(real: np.ndarray, generated: np.ndarray, indices: np.ndarray,
                      fps: float = 25, path: str | Path | None = None) -> Figure:
    """Two rows: real patches and the generator's patches for the same frames and audio."""
    n = len(indices)
    fig = Figure(figsize=(1.7 * n, 3.8), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False)
    for k, i in enumerate(indices):
        for row, images in enumerate((real, generated)):
            ax = axes[row, k]
            ax.imshow(images[k])
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, k].set_title(f"{i / fps:.2f} s", fontsize=8)
    axes[0, 0].set_ylabel("real")
    axes[1, 0].set_ylabel("generated")
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def render_strip(video: str | Path, wav: np.ndarray, boxes: np.ndarray, templates: list[int],
                 silent: list[bool], n: int = 8, fps: float = 25, sample_rate: int = 16_000,
                 path: str | Path | None = None) -> Figure:
    """A rendered video at a glance: the waveform with silent stretches shaded, and the lower
    face of `n` frames spread over it (cut with each frame's template box)."""
    from . import crop, media
    from .templates import silent_runs

    n_frames = len(templates)
    picks = np.linspace(0, n_frames - 1, n).round().astype(int)
    faces, wanted = {}, set(picks.tolist())
    for i, frame in enumerate(media.read_frames(video, fps=fps)):
        if i in wanted:
            faces[i] = crop.crop_face(frame, boxes[templates[i]], 160)
    fig = Figure(figsize=(1.6 * n, 3.6), layout="constrained")
    grid = fig.add_gridspec(2, n, height_ratios=(1, 1.6))
    wave = fig.add_subplot(grid[0, :])
    t = np.arange(len(wav)) / sample_rate
    wave.plot(t, wav, lw=0.4, color="tab:blue")
    for start, stop in silent_runs(np.asarray(silent, bool), 1):
        wave.axvspan(start / fps, stop / fps, color="0.85", lw=0)
    for i in picks:
        wave.axvline(i / fps, color="tab:red", lw=0.8)
    wave.set_xlim(0, max(len(wav) / sample_rate, n_frames / fps))
    wave.set_xlabel("seconds (grey: silence, lips held closed)")
    wave.set_yticks([])
    for k, i in enumerate(picks):
        ax = fig.add_subplot(grid[1, k])
        ax.imshow(faces[int(i)])
        ax.set_title(f"{i / fps:.2f} s", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig

