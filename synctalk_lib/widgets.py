"""Lip-sync preview for JupyterLab: scrub or play clips side by side with sound and sync score.

`LipSyncPreview` shows two (or more) frame sets of the same length — real and generated, or
two generated sets to flip A/B — with a play button linked to a frame slider, the waveform
with a cursor, the current frame's sync score (any per-frame array, e.g.
`evaluate.SyncScore.frame_confidence`) and the audio. Without a front end (papermill, nbval,
a script) it still builds, and `static_figure()` draws the same material with matplotlib;
displaying it puts that figure beside the widget as a fallback for viewers without widgets.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from . import media

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

WAVE_WIDTH, WAVE_HEIGHT = 800, 72  # px of the waveform strip
WAVE_COLOUR = (90, 120, 200)
SCORE_COLOUR = (230, 140, 30)
CURSOR_COLOUR = (220, 30, 30)
JPEG_QUALITY = 85
SIDE_BY_SIDE = "side by side"


def _as_sets(clips: Mapping[str, Any] | Sequence[Any]) -> dict[str, np.ndarray]:
    """{label: (N, H, W, 3) uint8 RGB} from a mapping, or a sequence labelled A, B, …"""
    items = clips.items() if isinstance(clips, Mapping) else (
        (chr(ord("A") + i), c) for i, c in enumerate(clips))
    sets = {}
    for label, frames in items:
        arr = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or len(arr) == 0:
            raise ValueError(f"clip {label!r} is {arr.dtype} {arr.shape}; expected (N, H, W, 3) "
                             "uint8 RGB frames with N > 0")
        sets[str(label)] = arr
    if not sets:
        raise ValueError("no clips to preview; pass e.g. {'real': frames, 'generated': frames}")
    return sets


def _fit_height(frame: np.ndarray, height: int) -> np.ndarray:
    if frame.shape[0] == height:
        return frame
    width = max(round(frame.shape[1] * height / frame.shape[0]), 1)
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def waveform_strip(wav: np.ndarray | None, n_frames: int, scores: np.ndarray | None = None,
                   width: int = WAVE_WIDTH, height: int = WAVE_HEIGHT) -> np.ndarray:
    """(height, width, 3) uint8 RGB: the audio envelope, with the per-frame score as a line.

    Column x covers frames x * n_frames / width; scores are scaled to the strip's height
    between their own minimum and maximum.
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
            xs = np.linspace(0, width - 1, len(values)).astype(np.int32)
            ys = (height - 3 - (np.nan_to_num(values, nan=lo) - lo) / span * (height - 6))
            pts = np.stack([xs, ys.astype(np.int32)], axis=1)[:, None, :]
            cv2.polylines(strip, [pts], False, SCORE_COLOUR, 1, cv2.LINE_AA)
    return strip


class LipSyncPreview:
    """Play or scrub frame sets side by side (or one at a time, A/B) with sound and sync score.

    Args:
        clips: {"real": frames, "generated": frames} or [frames_a, frames_b]; each (N, H, W, 3)
            uint8 RGB (full frames or crops). Sets of different length are cut to the shortest.
        wav: (A,) float32 mono audio of the clips, at `sample_rate`.
        scores: (N,) per-frame sync score to show (e.g. `SyncScore.frame_confidence`).
        height: display height of each frame in pixels.
    """

    def __init__(self, clips: Mapping[str, Any] | Sequence[Any], wav: np.ndarray | None = None,
                 *, fps: float = 25, sample_rate: int = 16_000,
                 scores: np.ndarray | None = None, score_label: str = "sync confidence",
                 height: int = 256, title: str = ""):
        import ipywidgets as widgets

        self.sets = _as_sets(clips)
        lengths = {k: len(v) for k, v in self.sets.items()}
        self.n_frames = min(lengths.values())
        if len(set(lengths.values())) > 1:
            log.warning("clips have different lengths %s; previewing the first %d frames",
                        lengths, self.n_frames)
        self.fps, self.sample_rate, self.height, self.title = fps, sample_rate, height, title
        self.wav = None if wav is None else np.asarray(wav, np.float32).ravel()
        self.scores = None if scores is None else np.asarray(scores, np.float32).ravel()
        self.score_label = score_label
        if self.scores is not None and len(self.scores) < self.n_frames:
            log.warning("%d scores for %d frames; frames past the end show no score",
                        len(self.scores), self.n_frames)
        self._strip = waveform_strip(self.wav, self.n_frames, self.scores)

        last = self.n_frames - 1
        self.play = widgets.Play(min=0, max=last, step=1, interval=max(round(1000 / fps), 1),
                                 description="play")
        self.slider = widgets.IntSlider(min=0, max=last, step=1, description="frame",
                                        continuous_update=True,
                                        layout=widgets.Layout(width="60%"))
        widgets.jslink((self.play, "value"), (self.slider, "value"))
        views = [SIDE_BY_SIDE, *self.sets] if len(self.sets) > 1 else list(self.sets)
        self.view = widgets.ToggleButtons(options=views, value=views[0], description="show")
        self.image = widgets.Image(format="jpeg")
        self.wave = widgets.Image(format="png", layout=widgets.Layout(width=f"{WAVE_WIDTH}px"))
        self.info = widgets.HTML()
        children: list[Any] = [widgets.HBox([self.play, self.slider]), self.view, self.image,
                               self.wave, self.info]
        self.audio = None
        if self.wav is not None:
            self.audio = widgets.Audio(value=media.wav_bytes(self.wav, sample_rate), format="wav",
                                       autoplay=False, loop=False)
            self.from_here = widgets.Button(description="audio from this frame",
                                            icon="volume-up")
            self.from_here.on_click(lambda _: self.play_audio_from(self.slider.value))
            children.append(widgets.HBox([self.audio, self.from_here]))
        if title:
            children.insert(0, widgets.HTML(f"<b>{title}</b>"))
        self.widget = widgets.VBox(children)
        self.slider.observe(lambda change: self.show(change["new"]), names="value")
        self.view.observe(lambda _: self.show(self.slider.value), names="value")
        self.play.observe(self._on_playing, names="playing")
        self.show(0)

    # --------------------------------------------------------------------------- content

    def frame_image(self, index: int, view: str | None = None) -> np.ndarray:
        """(height, W, 3) uint8 RGB of frame `index`: all sets side by side, or one set."""
        view = view or self.view.value
        labels = list(self.sets) if view == SIDE_BY_SIDE else [view]
        panels = [_fit_height(np.asarray(self.sets[k][index]), self.height) for k in labels]
        gap = np.full((self.height, 4, 3), 255, np.uint8)
        parts = [p for panel in panels for p in (panel, gap)][:-1]
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    def waveform_image(self, index: int) -> np.ndarray:
        """The waveform strip with the cursor at frame `index`."""
        strip = self._strip.copy()
        x = round(index * (strip.shape[1] - 1) / max(self.n_frames - 1, 1))
        strip[:, max(x - 1, 0): x + 1] = CURSOR_COLOUR
        return strip

    def score_at(self, index: int) -> float | None:
        if self.scores is None or index >= len(self.scores):
            return None
        return float(self.scores[index])

    def caption(self, index: int) -> str:
        text = f"frame {index} / {self.n_frames - 1} &middot; {index / self.fps:.2f} s"
        score = self.score_at(index)
        if score is not None:
            text += f" &middot; {self.score_label} <b>{score:.2f}</b>"
        return text

    def show(self, index: int) -> None:
        """Update image, cursor and caption to frame `index` (the slider calls this)."""
        index = int(np.clip(index, 0, self.n_frames - 1))
        self.image.value = media.image_bytes(self.frame_image(index), quality=JPEG_QUALITY)
        self.wave.value = media.image_bytes(self.waveform_image(index), ".png")
        self.info.value = self.caption(index)

    # ----------------------------------------------------------------------------- audio

    def play_audio_from(self, index: int) -> None:
        """Start the audio at frame `index` (the audio player then holds that tail)."""
        if self.audio is None or self.wav is None:
            return
        start = round(index / self.fps * self.sample_rate)
        self.audio.autoplay = True
        self.audio.value = media.wav_bytes(self.wav[start:] if start < len(self.wav) else
                                     np.zeros(1, np.float32), self.sample_rate)

    def _on_playing(self, change: dict[str, Any]) -> None:
        """Play starts the sound at the current frame; stop puts the whole clip back."""
        if self.audio is None or self.wav is None:
            return
        if change["new"]:
            self.play_audio_from(self.slider.value)
        else:
            self.audio.autoplay = False
            self.audio.value = media.wav_bytes(self.wav, self.sample_rate)

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
            t = np.arange(len(self.wav)) / self.sample_rate
            step = max(len(self.wav) // 4000, 1)
            ax.plot(t[::step], self.wav[::step], color="#5a78c8", lw=0.5)
        ax.set(xlabel="time (s)", xlim=(0, t_frames[-1] + 1 / self.fps))
        ax.set_yticks([])
        if self.scores is not None:
            twin = ax.twinx()
            m = min(len(self.scores), self.n_frames)
            twin.plot(t_frames[:m], self.scores[:m], color="#e68c1e", lw=1)
            twin.set_ylabel(self.score_label, fontsize=8, color="#e68c1e")
        for i in idx:
            ax.axvline(i / self.fps, color="#dc1e1e", lw=0.8)
        if self.title:
            fig.suptitle(self.title, fontsize=10)
        return fig

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The widget, plus a PNG of `static_figure()` for viewers without a widget manager."""
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude))
        buf = io.BytesIO()
        self.static_figure().savefig(buf, format="png", dpi=80)
        bundle["image/png"] = buf.getvalue()
        return bundle


def preview(clips: Mapping[str, Any] | Sequence[Any], wav: np.ndarray | None = None,
            **kwargs: Any) -> LipSyncPreview:
    """Build a `LipSyncPreview` (same arguments); display it as a notebook cell's last line."""
    return LipSyncPreview(clips, wav, **kwargs)


__all__ = ["LipSyncPreview", "preview", "waveform_strip"]
