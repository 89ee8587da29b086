"""Lip-sync preview for JupyterLab: play or scrub clips side by side with sound and sync score.

`LipSyncPreview` shows two (or more) frame sets of the same length — real and generated, or
two generated sets to flip A/B — with the waveform, the current frame's sync score (any
per-frame array, e.g. `evaluate.SyncScore.frame_confidence`) and the sound. It is an
`anywidget` whose browser half (`preview_widget.js`) plays the audio and shows, on every
screen refresh, the frame for the sound's `currentTime`: a frame that is not there yet is
dropped rather than letting the picture drift behind. Frames are JPEG-encoded only when the
browser asks, a small batch ahead of the playhead, so a minute-long clip costs no more to open
than a short one. Without a front end (papermill, nbval, a script) it still builds, and
`static_figure()` draws the same material with matplotlib; displaying it puts that figure
beside the widget as a fallback for viewers without widgets.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import cv2
import numpy as np
import traitlets as t

from . import media

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

WAVE_HEIGHT = 72  # px of the waveform strip (its width is the picture's)
WAVE_COLOUR = (90, 120, 200)
SCORE_COLOUR = (230, 140, 30)
CURSOR_COLOUR = (220, 30, 30)
JPEG_QUALITY = 85
GAP = 4  # px between sets side by side
SIDE_BY_SIDE = "side by side"
MAX_BATCH = 64  # frames per reply to the browser, however many it asks for
HERE = Path(__file__).parent


def _shrink(frame: np.ndarray, height: int | None) -> np.ndarray:
    if height is None or frame.shape[0] == height:
        return frame
    width = max(round(frame.shape[1] * height / frame.shape[0]), 1)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def _clip(label: str, frames: Any, height: int | None) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB of one set. Frames that come one by one (a list, a generator)
    are brought to `height` as they come, so a long full-resolution clip is never held whole."""
    if isinstance(frames, np.ndarray):
        arr = frames
    else:
        arr = [_shrink(np.asarray(f), height) if np.ndim(f) == 3 else np.asarray(f)
               for f in frames]
        arr = np.stack(arr) if arr and len({a.shape for a in arr}) == 1 else np.asarray(
            arr, dtype=object)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
        raise ValueError(f"clip {label!r} is {arr.dtype} {arr.shape}; expected (N, H, W, 3) "
                         "uint8 RGB frames with N > 0")
    return arr


def _as_sets(clips: Mapping[str, Any] | Sequence[Any],
             height: int | None = None) -> dict[str, np.ndarray]:
    """{label: (N, H, W, 3) uint8 RGB} from a mapping, or a sequence labelled A, B, …"""
    items = clips.items() if isinstance(clips, Mapping) else (
        (chr(ord("A") + i), c) for i, c in enumerate(clips))
    sets = {str(label): _clip(str(label), frames, height) for label, frames in items}
    if not sets:
        raise ValueError("no clips to preview; pass e.g. {'real': frames, 'generated': frames}")
    return sets


def waveform_strip(wav: np.ndarray | None, n_frames: int, scores: np.ndarray | None = None,
                   width: int = 800, height: int = WAVE_HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8 RGB: the audio envelope, with the per-frame score as a line.

    Column x covers frames x * n_frames / width (the same time axis as the preview's cursor);
    scores are scaled to the strip's height between their own minimum and maximum.
    """
    strip = np.full((height, width, 3), 255, np.uint8)
    mid = height // 2
    if wav is not None and len(wav):
        edges = np.linspace(0, len(wav), width + 1).astype(int)
        peak = max(float(np.abs(wav).max()), 1e-6)
        for x in range(width):
            seg = wav[edges[x]: max(edges[x + 1], edges[x] + 1)]
            lo, hi = float(seg.min()) / peak, float(seg.max()) / peak
            y0, y1 = int(mid - hi * (mid - 2)), int(mid - lo * (mid - 2))
            strip[y0: y1 + 1, x] = WAVE_COLOUR
    if scores is not None and len(scores):
        values = np.asarray(scores, np.float32)
        finite = values[np.isfinite(values)]
        if len(finite):
            lo, hi = float(finite.min()), float(finite.max())
            span = hi - lo if hi > lo else 1.0
            xs = ((np.arange(len(values)) + 0.5) * width / max(n_frames, 1)).astype(np.int32)
            ys = (height - 3 - (np.nan_to_num(values, nan=lo) - lo) / span * (height - 6))
            pts = np.stack([np.clip(xs, 0, width - 1), ys.astype(np.int32)], axis=1)[:, None, :]
            cv2.polylines(strip, [pts], False, SCORE_COLOUR, 1, cv2.LINE_AA)
    return strip


def cursor_x(index: int, n_frames: int, width: int) -> int:
    """Column of frame `index`'s middle on a strip `width` wide (the browser uses the same)."""
    return min(int((index + 0.5) * width / max(n_frames, 1)), width - 1)


class LipSyncPreview(anywidget.AnyWidget):
    """Play or scrub frame sets side by side (or one at a time, A/B) with sound and sync score.

    Args:
        clips: {"real": frames, "generated": frames} or [frames_a, frames_b]; each (N, H, W, 3)
            uint8 RGB (full frames or crops). Sets of different length are cut to the shortest.
        wav: (A,) float32 mono audio of the clips, at `sample_rate`.
        scores: (N,) per-frame sync score to show (e.g. `SyncScore.frame_confidence`).
        scale: display size of the frames relative to their own (1 = pixel for pixel); below 1
            the frames are shrunk before they are sent.
        height: instead of `scale`, show every set at this height in pixels; frames passed one
            by one (a list or a generator, e.g. `VideoFrames.iter_frames()`) are shrunk to it
            as they are read.
        batch: frames the browser asks for at a time, ahead of the playhead.
    """

    _esm = HERE / "preview_widget.js"
    _css = HERE / "preview_widget.css"

    labels = t.List(t.Unicode()).tag(sync=True)
    views = t.List(t.Unicode()).tag(sync=True)
    view = t.Unicode().tag(sync=True)
    index = t.Int(0).tag(sync=True)
    n_frames = t.Int(1).tag(sync=True)
    fps = t.Float(25.0).tag(sync=True)
    sizes = t.List(t.List(t.Int())).tag(sync=True)  # [width, height] of each set, as shown
    gap = t.Int(GAP).tag(sync=True)
    batch = t.Int(25).tag(sync=True)
    wave_png = t.Bytes(b"").tag(sync=True)
    audio_wav = t.Bytes(b"").tag(sync=True)
    scores = t.List(t.Float(allow_none=True)).tag(sync=True)
    score_label = t.Unicode("").tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def __init__(self, clips: Mapping[str, Any] | Sequence[Any], wav: np.ndarray | None = None,
                 *, fps: float = 25, sample_rate: int = 16_000,
                 scores: np.ndarray | None = None, score_label: str = "sync confidence",
                 scale: float = 1.0, height: int | None = None, batch: int = 25,
                 title: str = ""):
        if not scale > 0 or (height is not None and height < 1):
            raise ValueError(f"scale must be > 0 and height >= 1, not {scale} and {height}")
        self.sets = _as_sets(clips, height)
        lengths = {k: len(v) for k, v in self.sets.items()}
        n_frames = min(lengths.values())
        if len(set(lengths.values())) > 1:
            log.warning("clips have different lengths %s; previewing the first %d frames",
                        lengths, n_frames)
        self.scale, self.sample_rate = float(scale), sample_rate
        self.wav = None if wav is None else np.asarray(wav, np.float32).ravel()
        score_values = None if scores is None else np.asarray(scores, np.float32).ravel()
        if score_values is not None and len(score_values) < n_frames:
            log.warning("%d scores for %d frames; frames past the end show no score",
                        len(score_values), n_frames)
        self.score_values = score_values
        factors = [scale if height is None else height / f.shape[1] for f in self.sets.values()]
        sizes = [[max(round(f.shape[2] * k), 1), max(round(f.shape[1] * k), 1)]
                 for f, k in zip(self.sets.values(), factors)]
        views = [SIDE_BY_SIDE, *self.sets] if len(self.sets) > 1 else list(self.sets)
        width = sum(w for w, _ in sizes) + GAP * (len(sizes) - 1)
        self._strip = waveform_strip(self.wav, n_frames, score_values, width=width)
        super().__init__(
            labels=list(self.sets), views=views, view=views[0], n_frames=n_frames, fps=fps,
            sizes=sizes, batch=max(int(batch), 1), title=title, score_label=score_label,
            wave_png=media.image_bytes(self._strip, ".png"),
            audio_wav=b"" if self.wav is None else media.wav_bytes(self.wav, sample_rate),
            scores=[] if score_values is None else
            [None if not math.isfinite(v) else float(v) for v in score_values[:n_frames]])
        self.on_msg(self._on_message)

    # --------------------------------------------------------------------------- content

    def panel(self, label: str, index: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB: frame `index` of set `label` at the display scale."""
        frame = np.asarray(self.sets[label][index])
        w, h = self.sizes[list(self.sets).index(label)]
        if frame.shape[:2] == (h, w):
            return np.ascontiguousarray(frame)
        return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)

    def frame_image(self, index: int, view: str | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB of frame `index` as the browser draws it: all sets side by side
        (top-aligned, white gaps), or one set."""
        view = view or self.view
        labels = list(self.sets) if view == SIDE_BY_SIDE else [view]
        panels = [self.panel(k, index) for k in labels]
        height = max(p.shape[0] for p in panels)
        parts = []
        for p in panels:
            pad = np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)
            parts += [np.concatenate([p, pad]), np.full((height, GAP, 3), 255, np.uint8)]
        return np.ascontiguousarray(np.concatenate(parts[:-1], axis=1))

    def waveform_image(self, index: int) -> np.ndarray:
        """The waveform strip with the cursor at frame `index`."""
        strip = self._strip.copy()
        x = cursor_x(index, self.n_frames, strip.shape[1])
        strip[:, max(x - 1, 0): x + 1] = CURSOR_COLOUR
        return strip

    def score_at(self, index: int) -> float | None:
        if self.score_values is None or index >= len(self.score_values):
            return None
        return float(self.score_values[index])

    def frame_jpegs(self, start: int, stop: int) -> list[bytes]:
        """JPEGs of frames start..stop-1 (at most MAX_BATCH), each frame's sets in order."""
        stop = min(stop, self.n_frames, start + MAX_BATCH)
        return [media.image_bytes(self.panel(label, i), quality=JPEG_QUALITY)
                for i in range(max(start, 0), stop) for label in self.sets]

    def _on_message(self, _widget: Any, content: dict[str, Any], _buffers: list) -> None:
        """The browser asks for frames [start, stop); the reply carries them as buffers."""
        if content.get("type") != "frames":
            return
        start = max(int(content["start"]), 0)
        stop = min(int(content["stop"]), self.n_frames, start + MAX_BATCH)
        if stop > start:
            self.send({"type": "frames", "start": start, "stop": stop},
                      buffers=self.frame_jpegs(start, stop))

    # --------------------------------------------------------------------------- display

    def static_figure(self, n: int = 6, indices: Sequence[int] | None = None) -> Figure:
        """The preview as a matplotlib figure: frames at `n` evenly spaced times per set, the
        waveform and the score underneath with the chosen frames marked."""
        from matplotlib.figure import Figure

        idx = (np.asarray(indices, int) if indices is not None else
               np.linspace(0, self.n_frames - 1, min(n, self.n_frames)).round().astype(int))
        rows = len(self.sets)
        fig = Figure(figsize=(1.9 * len(idx) + 0.6, 1.9 * rows + 1.8), layout="constrained")
        grid = fig.add_gridspec(rows + 1, len(idx), height_ratios=[1] * rows + [0.9])
        for r, (label, frames) in enumerate(self.sets.items()):
            for c, i in enumerate(idx):
                ax = fig.add_subplot(grid[r, c])
                ax.imshow(frames[i])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{i / self.fps:.2f} s", fontsize=8)
                if c == 0:
                    ax.set_ylabel(label, fontsize=9)
        ax = fig.add_subplot(grid[rows, :])
        t_frames = np.arange(self.n_frames) / self.fps
        if self.wav is not None:
            times = np.arange(len(self.wav)) / self.sample_rate
            step = max(len(self.wav) // 4000, 1)
            ax.plot(times[::step], self.wav[::step], color="#5a78c8", lw=0.5)
        ax.set(xlabel="time (s)", xlim=(0, t_frames[-1] + 1 / self.fps))
        ax.set_yticks([])
        if self.score_values is not None:
            twin = ax.twinx()
            m = min(len(self.score_values), self.n_frames)
            twin.plot(t_frames[:m], self.score_values[:m], color="#e68c1e", lw=1)
            twin.set_ylabel(self.score_label, fontsize=8, color="#e68c1e")
        for i in idx:
            ax.axvline(i / self.fps, color="#dc1e1e", lw=0.8)
        if self.title:
            fig.suptitle(self.title, fontsize=10)
        return fig

    def _repr_mimebundle_(self, include: Any = None,
                          exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The widget, plus a PNG of `static_figure()` for viewers without a widget manager."""
        shown = super()._repr_mimebundle_(include=include, exclude=exclude) or {}
        bundle, metadata = shown if isinstance(shown, tuple) else (shown, {})
        bundle = dict(bundle)
        buf = io.BytesIO()
        self.static_figure().savefig(buf, format="png", dpi=80)
        bundle["image/png"] = buf.getvalue()
        return bundle, metadata

    def __repr__(self) -> str:  # the traits' repr would spell out the whole wav
        sets = ", ".join(f"{k}: {w}x{h}" for k, (w, h) in zip(self.sets, self.sizes))
        return f"LipSyncPreview({self.n_frames} frames at {self.fps:g} fps; {sets})"


def preview(clips: Mapping[str, Any] | Sequence[Any], wav: np.ndarray | None = None,
            **kwargs: Any) -> LipSyncPreview:
    """Build a `LipSyncPreview` (same arguments); display it as a notebook cell's last line."""
    return LipSyncPreview(clips, wav, **kwargs)


__all__ = ["LipSyncPreview", "cursor_x", "preview", "waveform_strip"]
