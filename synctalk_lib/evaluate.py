"""Evaluation (docs/design.md §7): is a clip in sync, and how close is a generated one to the real?

Contract: 25 fps frames and 16 kHz mono audio (`media` converts anything to that). Every metric
works on plain arrays, so the same call scores a generated clip and the real held-out video,
whose scores are the ceiling to compare with:

- sync offset and confidence in the SyncNet manner, per clip and over time (2 s windows), with
  the person's own SyncNet (`syncnet.load_syncnet`) and, when `syncnet_v2.model` of
  joonson/syncnet_python is on disk, with that network (LSE-D / LSE-C as papers report them);
- lower-face PSNR / SSIM, mouth-landmark distance (LMD), correlation of mouth opening;
- mouth motion while the audio is silent, mouth jitter, colour step across the paste border.

`make_clip` (or `dataset_clip`) cuts a clip's crops and finds its landmarks once;
`evaluate_clip` gathers every metric; `make_report` / `write_report` store them as
`outputs/<name>/eval/report.json`; `choose_best_checkpoint` picks a checkpoint by sync.

Offsets are in video frames; a positive offset means the audio lags the mouth (the audio that
matches a face comes k frames later), as in `syncnet.sync_offset`. syncnet_python prints the
opposite sign.

References: Chung and Zisserman, "Out of time: automated lip sync in the wild" (2016), and its
code joonson/syncnet_python (network, MFCC input, offset search); Prajwal et al., Wav2Lip
(2020), which named the distance and confidence LSE-D and LSE-C; Chen et al., "Lip movements
generation at a glance" (2018) for LMD.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

from . import audio as audio_lib
from . import crop, data, files, landmarks, media, syncnet, syncnet_v2
from .config import Config, get_config
from .progress import progress_bar
from .syncnet_v2 import (  # re-exported: evaluation users find every metric here
    V2_SIZE,
    V2_WINDOW,
    SyncNetV2,
    SyncNetV2WeightsError,
    load_syncnet_v2,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dataset import PreparedDataset

log = logging.getLogger(__name__)

MAX_SHIFT = 15  # offsets searched: -15..15 frames (0.6 s), syncnet_python's --vshift
SYNC_WINDOW_S = 2.0  # window of the offset/confidence curves over time
SYNC_HOP_S = 0.4
FRAME_CONF_MEDIAN = 9  # syncnet_python median-filters its per-frame confidence over 9 frames
PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; JSON and means need a number
SILENCE_MARGIN = 2  # frames: a silent frame needs this much silence on each side (lips close)
MOUTH_MARGIN = 0.35  # mouth region = lip extent + this share of the mouth width on each side
SEAM_BAND = 3  # px of the bands compared just inside and just outside the pasted region
SEAM_SECTORS = 16  # the border is compared per angular sector, so a local step is not averaged out
LENGTH_TOLERANCE = 2  # frames of length difference accepted without a warning
REPORT_FILE = "report.json"

Frames = np.ndarray | Sequence[np.ndarray] | Iterable[np.ndarray]


# ============================================================================ inputs


def _iter_frames(frames: Any) -> Iterator[np.ndarray]:
    """A fresh iterator over (H, W, 3) uint8 RGB frames, each checked."""
    source = frames.iter_frames() if hasattr(frames, "iter_frames") else iter(frames)
    for i, frame in enumerate(source):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame {i} is {frame.dtype} {frame.shape}; expected (H, W, 3) "
                             "uint8 RGB (convert BGR from OpenCV with cv2.cvtColor first)")
        yield frame


def _rereadable(frames: Any) -> Any:
    """Arrays, sequences and frame sources can be read twice; a one-shot iterator is stored."""
    if isinstance(frames, (np.ndarray, Sequence)) or hasattr(frames, "iter_frames"):
        return frames
    log.info("frames given as a one-shot iterator: holding them in memory for two passes")
    return list(_iter_frames(frames))


def check_audio(wav: np.ndarray, name: str = "audio") -> np.ndarray:
    """(S,) float32 mono in [-1, 1] at 16 kHz, or a ValueError that says how to get it."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
        raise ValueError(f"{name} has shape {wav.shape}; expected mono (S,) samples: load it "
                         "with media.load_audio, which mixes down to mono at 16 kHz")
    if len(wav) == 0:
        raise ValueError(f"{name} is empty; pass the clip's 16 kHz samples")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"{name} is {wav.dtype}; expected float samples in [-1, 1] "
                         "(divide int16 samples by 32768)")
    return wav.astype(np.float32, copy=False)


def _common_length(n_a: int, n_b: int, what: str) -> int:
    """The shorter of two lengths; a difference beyond LENGTH_TOLERANCE is logged."""
    if min(n_a, n_b) <= 0:
        raise ValueError(f"{what}: nothing to compare ({n_a} and {n_b} frames)")
    if abs(n_a - n_b) > LENGTH_TOLERANCE:
        log.warning("%s: lengths differ (%d vs %d frames); using the first %d", what, n_a, n_b,
                    min(n_a, n_b))
    return min(n_a, n_b)


# ---------------------------------------------------------------------------- landmarks


@dataclass(frozen=True)
class FaceTrack:
    """Landmarks of a clip and the lower-face crop boxes derived from them.

    points: (N, P, 2) float32 pixel (x, y), frames without a face filled from neighbours;
    found: (N,) bool; boxes: (N, 4) float32 smoothed square boxes (crop.smooth_boxes).
    """

    points: np.ndarray
    found: np.ndarray
    boxes: np.ndarray
    scheme: landmarks.Scheme

    def __len__(self) -> int:
        return len(self.points)

    def slice(self, start: int, stop: int) -> FaceTrack:
        return FaceTrack(self.points[start:stop], self.found[start:stop],
                         self.boxes[start:stop], self.scheme)


def track_faces(frames: Frames, cfg: Config | None = None, progress: bool = True) -> FaceTrack:
    """Landmarks (the configured backend, tracking mode) and crop boxes of every frame.

    The boxes follow preprocessing exactly (crop.boxes_from_landmarks, then smooth_boxes with
    `crop.smooth_frames`), so crops of any clip match what the models were trained on.
    """
    cfg = cfg or get_config()
    detector = landmarks.make_detector(cfg.landmarks, video=True)
    scheme = detector.scheme
    points, found = [], []
    try:
        for frame in progress_bar(_iter_frames(frames), desc="landmarks", unit="frame",
                                  enabled=progress):
            pts = detector(frame)
            found.append(pts is not None)
            points.append(pts if pts is not None else np.full((scheme.n_points, 2), np.nan,
                                                              np.float32))
    finally:
        detector.close()
    if not found:
        raise ValueError("no frames to track; pass (N, H, W, 3) uint8 RGB frames")
    found_arr = np.array(found)
    if not found_arr.any():
        raise ValueError(f"no face found in any of {len(found)} frames; the clip must show one "
                         "face toward the camera")
    pts = landmarks.fill_missing(np.stack(points).astype(np.float32), found_arr)
    if not found_arr.all():
        log.warning("no face in %d of %d frames; filled from neighbours", (~found_arr).sum(),
                    len(found_arr))
    raw = crop.boxes_from_landmarks(pts, scheme)
    return FaceTrack(pts, found_arr, crop.smooth_boxes(raw, cfg.crop.smooth_frames), scheme)


def dataset_track(ds: PreparedDataset, start: int = 0, stop: int | None = None) -> FaceTrack:
    """The cached landmarks and boxes of frames [start, stop) of a prepared dataset."""
    return FaceTrack(ds.points()[start:stop], ds.found()[start:stop], ds.boxes()[start:stop],
                     ds.scheme)


def crop_points(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, P, 2) pixels → positions in crop-box sides from the box corner: head position and
    face size drop out, so clips of different framing compare."""
    side = (boxes[:, 2] - boxes[:, 0])[:, None, None]
    return ((points - boxes[:, None, :2]) / side).astype(np.float32)


def lip_points(points: np.ndarray, scheme: landmarks.Scheme) -> np.ndarray:
    """(..., P, 2) → (..., M, 2): the lip contour points of the scheme (`Scheme.lips`)."""
    if not scheme.lips:
        raise ValueError(f"landmark scheme {scheme.name!r} has no lip points; mouth metrics "
                         "need landmarks.backend='auto' (Face Mesh) or 'face_alignment'")
    return points[..., list(scheme.lips), :]


# --------------------------------------------------------------------------------- clips


@dataclass
class Clip:
    """One clip's material for every metric, computed once from frames and audio.

    crops: (N, S, S, 3) uint8 RGB lower-face crops at `cfg.crop.size`, cut with `boxes`
    exactly as preprocessing caches them; boxes: (N, 4) the boxes they were cut with; track:
    landmarks found on this clip's own frames; audio: (A,) float32 16 kHz;
    face_crops: (N, 224, 224, 3) uint8 RGB syncnet_python face crops, when asked for.
    """

    name: str
    crops: np.ndarray
    boxes: np.ndarray
    track: FaceTrack
    audio: np.ndarray
    cfg: Config
    face_crops: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return len(self.crops)

    @property
    def fps(self) -> float:
        return float(self.cfg.media.fps)

    def slice(self, start: int, stop: int, name: str | None = None) -> Clip:
        """Frames [start, stop) with their audio."""
        hop = self.cfg.media.sample_rate // self.cfg.media.fps
        v2 = None if self.face_crops is None else self.face_crops[start:stop]
        return Clip(name or self.name, self.crops[start:stop], self.boxes[start:stop],
                    self.track.slice(start, stop), self.audio[start * hop: stop * hop],
                    self.cfg, v2)

    def patches(self, size: int | None = None) -> np.ndarray:
        """(N, s, s, 3) uint8: the inner patches the models see, resized (area) to `size`."""
        ccfg = self.cfg.crop
        inner = self.crops[:, ccfg.ring: ccfg.size - ccfg.ring, ccfg.ring: ccfg.size - ccfg.ring]
        return data.resize_patches(inner, size or ccfg.inner)

    def lips(self) -> np.ndarray:
        """(N, M, 2) lip points in crop-box sides (`crop_points` with this clip's boxes)."""
        return lip_points(crop_points(self.track.points, self.boxes), self.track.scheme)

    def opening(self) -> np.ndarray:
        """(N,) inner-lip gap over face width, from this clip's own landmarks."""
        return landmarks.mouth_opening(self.track.points, self.track.scheme)


def make_clip(frames: Frames, wav: np.ndarray, *, boxes: np.ndarray | None = None,
              track: FaceTrack | None = None, cfg: Config | None = None, name: str = "clip",
              face_crops: bool = False, progress: bool = True) -> Clip:
    """Landmarks, lower-face crops (and optionally syncnet_v2 face crops) of a clip.

    frames: (N, H, W, 3) uint8 RGB array, a list, any iterable or a FrameSource; wav: (A,)
    float32 16 kHz mono. boxes: crop boxes to cut with; pass the boxes the generated mouths
    were pasted with (the dataset's), so real and generated crops are pixel-aligned. Default:
    boxes from this clip's own landmarks. track: landmarks already found (skips detection).
    """
    cfg = cfg or get_config()
    wav = check_audio(wav)
    if track is None:
        frames = _rereadable(frames)
        track = track_faces(frames, cfg, progress)
    boxes = track.boxes if boxes is None else np.asarray(boxes, np.float32)
    if len(boxes) != len(track):
        raise ValueError(f"{len(boxes)} boxes for {len(track)} frames of landmarks; pass one "
                         "box per frame")
    size = cfg.crop.size
    crops = np.empty((len(track), size, size, 3), np.uint8)
    v2_boxes = syncnet_v2.crop_boxes(track.points) if face_crops else None
    v2 = np.empty((len(track), V2_SIZE, V2_SIZE, 3), np.uint8) if face_crops else None
    n = 0
    for i, frame in enumerate(progress_bar(_iter_frames(frames), total=len(track), desc="crops",
                                           unit="frame", enabled=progress)):
        if i >= len(track):
            raise ValueError(f"more frames than the {len(track)} of the landmarks/boxes given")
        crops[i] = crop.crop_face(frame, boxes[i], size)
        if v2 is not None:
            v2[i] = syncnet_v2.face_crop(frame, v2_boxes[i])
        n += 1
    if n != len(track):
        raise ValueError(f"{n} frames for {len(track)} boxes/landmarks; pass matching lengths")
    return Clip(name, crops, boxes, track, wav, cfg, v2)


def dataset_clip(ds: PreparedDataset, start: int = 0, stop: int | None = None,
                 name: str = "real", face_crops: bool = False, progress: bool = True) -> Clip:
    """Frames [start, stop) of a prepared dataset as a Clip, from its cache (no detection).

    Use it for the real held-out tail (`heldout_range`), the ceiling of every metric.
    """
    stop = ds.n_frames if stop is None else min(stop, ds.n_frames)
    if not 0 <= start < stop:
        raise ValueError(f"frame range {start}..{stop} is empty (dataset has {ds.n_frames})")
    cfg = ds.config
    hop = cfg.media.sample_rate // cfg.media.fps
    wav = ds.wav()[start * hop: stop * hop]
    track = dataset_track(ds, start, stop)
    crops = np.ascontiguousarray(ds.crops()[start:stop])
    v2 = None
    if face_crops:
        v2_boxes = syncnet_v2.crop_boxes(track.points)
        frames = ds.frames().iter_frames(start=start, count=stop - start)
        v2 = np.stack([syncnet_v2.face_crop(f, b) for f, b in zip(
            progress_bar(frames, total=stop - start, desc="face crops", enabled=progress),
            v2_boxes)])
    return Clip(name, crops, track.boxes, track, check_audio(wav), cfg, v2)


def heldout_range(ds: PreparedDataset, cfg: Config | None = None) -> tuple[int, int]:
    """[start, stop) of the held-out tail that training never saw (`train.heldout_fraction`)."""
    cfg = cfg or ds.config
    split = data.split_frames(ds.n_frames, cfg.train.heldout_fraction, cfg.train.val_fraction)
    if len(split.heldout) == 0:
        raise ValueError("train.heldout_fraction is 0: no held-out frames to evaluate on")
    return int(split.heldout[0]), int(split.heldout[-1]) + 1


# ============================================================================ sync


@dataclass(frozen=True)
class SyncCurve:
    """Offset and confidence in sliding windows: where in the clip sync holds or breaks."""

    times: np.ndarray  # (W,) float s, window centres
    offsets: np.ndarray  # (W,) int frames
    confidences: np.ndarray  # (W,) float, median minus minimum distance in the window
    distances: np.ndarray  # (W,) float, minimum mean distance in the window
    window_s: float


@dataclass(frozen=True)
class SyncScore:
    """Audio-video offset and confidence of a clip, in the manner of SyncNet.

    offset: frames, > 0 when the audio lags; confidence (LSE-C) = median minus minimum of the
    mean embedding distance over shifts; distance (LSE-D) = that minimum. Real video: offset
    0 +- 1 and a clear confidence; a generated clip is good when close to the real one's.
    """

    network: str  # "own" (the person's SyncNet) or "syncnet_v2"
    offset: int
    confidence: float
    distance: float
    shifts: np.ndarray  # (2 * max_shift + 1,) int
    distances: np.ndarray  # (2 * max_shift + 1,) mean distance per shift
    frame_confidence: np.ndarray  # (N,) per video frame (syncnet_python's framewise confidence)
    curve: SyncCurve

    @property
    def in_sync(self) -> bool:
        return abs(self.offset) <= 1

    def summary(self) -> dict[str, float | int]:
        return {"offset": self.offset, "confidence": self.confidence, "distance": self.distance}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "network": self.network, "shifts": self.shifts,
                "distances": self.distances, "frame_confidence": self.frame_confidence,
                "curve": {"times": self.curve.times, "offsets": self.curve.offsets,
                          "confidences": self.curve.confidences,
                          "distances": self.curve.distances, "window_s": self.curve.window_s}}


def shift_distances(face_emb: np.ndarray, audio_emb: np.ndarray, max_shift: int = MAX_SHIFT,
                    zero_pad: bool = False) -> np.ndarray:
    """(2 * max_shift + 1, N) distance between face row i and audio row i + k, k = -max..max.

    Audio rows outside the clip are NaN (left out of means), or with `zero_pad` a zero vector
    plus torch's pairwise-distance eps, as syncnet_python's `calc_pdist` does (for LSE numbers
    comparable with papers).
    """
    n, m = len(face_emb), len(audio_emb)
    if n == 0 or m == 0:
        raise ValueError("no embeddings to compare; the clip is shorter than one window")
    eps = 1e-6 if zero_pad else 0.0
    shifts = np.arange(-max_shift, max_shift + 1)
    out = np.full((len(shifts), n), np.nan, np.float32)
    for s, k in enumerate(shifts):
        lo, hi = max(0, -k), min(n, m - k)
        if hi > lo:
            out[s, lo:hi] = np.linalg.norm(face_emb[lo:hi] - audio_emb[lo + k: hi + k] + eps,
                                           axis=1)
        if zero_pad:
            outside = np.ones(n, bool)
            outside[lo:max(hi, lo)] = False
            out[s, outside] = np.linalg.norm(face_emb[outside] + eps, axis=1)
    return out


def _best_shift(mean_dist: np.ndarray) -> tuple[int, float, float]:
    """(index of the minimum, confidence = median - min, min) of a per-shift mean distance."""
    best = int(np.nanargmin(mean_dist))
    return best, float(np.nanmedian(mean_dist) - mean_dist[best]), float(mean_dist[best])


def sync_curve(dist: np.ndarray, fps: float, n_window_frames: int, window_s: float = SYNC_WINDOW_S,
               hop_s: float = SYNC_HOP_S) -> SyncCurve:
    """Offset and confidence in sliding windows over a `shift_distances` matrix.

    Each window averages the distances of its face rows only; the audio may come from outside
    it, so every shift is measured on the same faces.
    """
    shifts = (len(dist) - 1) // 2
    n = dist.shape[1]
    width = min(max(round(window_s * fps), 1), n)
    hop = max(round(hop_s * fps), 1)
    starts = np.arange(0, n - width + 1, hop)
    times, offsets, confs, mins = [], [], [], []
    for a in starts:
        block = dist[:, a: a + width]
        enough = np.sum(np.isfinite(block), axis=1) >= width / 2
        with np.errstate(invalid="ignore"), _quiet_nan_warnings():
            mean = np.where(enough, np.nanmean(block, axis=1), np.nan)
        if not np.isfinite(mean).any():
            continue
        best, conf, low = _best_shift(mean)
        times.append((a + (width + n_window_frames - 1) / 2) / fps)
        offsets.append(best - shifts)
        confs.append(conf)
        mins.append(low)
    return SyncCurve(np.array(times, np.float32), np.array(offsets, int),
                     np.array(confs, np.float32), np.array(mins, np.float32), window_s)


@contextlib.contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """nanmean of an all-NaN column warns; callers handle such columns themselves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def score_embeddings(face_emb: np.ndarray, audio_emb: np.ndarray, *, network: str, fps: float,
                     n_window_frames: int, n_frames: int, max_shift: int = MAX_SHIFT,
                     zero_pad: bool = False, window_s: float = SYNC_WINDOW_S) -> SyncScore:
    """Clip offset, confidence and distance, the per-frame confidence and the curve over time.

    face_emb: (W, D) one row per window of `n_window_frames` frames starting at frame i;
    audio_emb: (M, D) the audio window starting at frame i. The per-frame confidence is
    syncnet_python's framewise one (median-filtered over 9 windows, placed at the window's
    middle frame) with one change: the window's distance at the clip's offset is compared with
    the median over shifts of the window's own distances, not of the clip's. Silence then
    reads as ~0 (no evidence either way) instead of as high confidence.
    """
    dist = shift_distances(face_emb, audio_emb, max_shift, zero_pad)
    with _quiet_nan_warnings():
        mean = np.nanmean(dist, axis=1)
        best, conf, low = _best_shift(mean)
        per_window = _fill_nan(np.nanmedian(dist, axis=0) - dist[best])
    if len(per_window) >= FRAME_CONF_MEDIAN:
        per_window = scipy.signal.medfilt(per_window, FRAME_CONF_MEDIAN)
    frames = np.clip(np.arange(n_frames) - n_window_frames // 2, 0, len(per_window) - 1)
    return SyncScore(network=network, offset=best - max_shift, confidence=conf, distance=low,
                     shifts=np.arange(-max_shift, max_shift + 1), distances=mean.astype(np.float32),
                     frame_confidence=per_window[frames].astype(np.float32),
                     curve=sync_curve(dist, fps, n_window_frames, window_s))


def _fill_nan(x: np.ndarray) -> np.ndarray:
    """Replace NaNs by the nearest finite value (0 if there is none)."""
    x = np.asarray(x, np.float32).copy()
    good = np.isfinite(x)
    if not good.any():
        return np.zeros_like(x)
    idx = np.arange(len(x))
    x[~good] = np.interp(idx[~good], idx[good], x[good])
    return x


def mel_windows(wav: np.ndarray, n_frames: int, cfg: Config | None = None) -> np.ndarray:
    """(n_frames, 80, 16) float32 mel windows of 16 kHz audio, as preprocessing makes them."""
    cfg = cfg or get_config()
    mel = audio_lib.melspectrogram(check_audio(wav), cfg.audio, cfg.media.sample_rate)
    return audio_lib.frame_mel_windows(mel, n_frames, cfg.audio, cfg.media)


@functools.lru_cache(maxsize=2)
def _whisper_features(settings, media_cfg, device: str | None):
    from . import whisper

    return whisper.WhisperFeatures.load(cfg=settings, media=media_cfg, device=device)


def _speech_features(net: syncnet.SyncNet, wav: np.ndarray, n: int,
                     device: str | None) -> np.ndarray:
    """The speech features a speech SyncNet hears, made as its checkpoint's settings say."""
    cfg = net.source_config
    if cfg is None:
        raise ValueError("a speech-feature SyncNet needs its checkpoint's settings: load it "
                         "with syncnet.load_syncnet")
    return _whisper_features(cfg.whisper, cfg.media, device)(wav, n)


def own_sync(net: syncnet.SyncNet, patches: np.ndarray, wav: np.ndarray, cfg: Config | None = None,
             max_shift: int = MAX_SHIFT, window_s: float = SYNC_WINDOW_S,
             device: str | None = None) -> SyncScore:
    """Sync of lower-face patches against audio with the person's own SyncNet.

    patches: (N, H, W, 3) uint8 RGB inner crop patches (`Clip.patches()`; resized to the
    network's size here, as `syncnet.dataset_faces` does); wav: (A,) float32 16 kHz. Audio
    and video of different length are cut to the shorter, as syncnet_python does.
    """
    cfg = cfg or get_config()
    wav = check_audio(wav)
    n_audio = audio_lib.n_video_frames(len(wav), cfg.media)
    n = _common_length(len(patches), n_audio, "own SyncNet: video vs audio")
    if n < net.cfg.n_frames:
        raise ValueError(f"{n} frames are fewer than SyncNet's window of {net.cfg.n_frames}; "
                         "evaluate a longer clip")
    faces = data.resize_patches(np.asarray(patches[:n]), net.cfg.image_size)
    face_emb = syncnet.embed_faces(net, faces, device=device)
    speech = _speech_features(net, wav, n, device) if net.speech else None
    audio_emb = syncnet.embed_audio(net, mel_windows(wav, n, cfg), device=device,
                                    features=speech)
    return score_embeddings(face_emb, audio_emb, network="own", fps=cfg.media.fps,
                            n_window_frames=net.cfg.n_frames, n_frames=n, max_shift=max_shift,
                            window_s=window_s)


def sync_score(net: syncnet.SyncNet, frames: Frames, wav: np.ndarray, *,
               boxes: np.ndarray | None = None, cfg: Config | None = None,
               max_shift: int = MAX_SHIFT, device: str | None = None,
               progress: bool = True) -> SyncScore:
    """Sync of any (frames, audio) pair with the person's own SyncNet, in one call.

    frames: full (N, H, W, 3) uint8 RGB frames (or an iterable); boxes: their lower-face crop
    boxes (default: found with the landmark detector, as preprocessing does).
    """
    cfg = cfg or get_config()
    if boxes is None:
        frames = _rereadable(frames)
        boxes = track_faces(frames, cfg, progress).boxes
    size, ring = cfg.crop.size, cfg.crop.ring
    patches = [crop.crop_face(f, b, size)[ring: size - ring, ring: size - ring]
               for f, b in zip(_iter_frames(frames), boxes)]
    if len(patches) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but fewer frames ({len(patches)}); pass one box "
                         "per frame")
    return own_sync(net, np.stack(patches), wav, cfg, max_shift, device=device)


# ================================================================= syncnet_python's SyncNet


def syncnet_v2_sync(net: SyncNetV2, face_crops: np.ndarray, wav: np.ndarray,
                    fps: float = 25, sample_rate: int = 16_000, max_shift: int = MAX_SHIFT,
                    batch: int = 20, window_s: float = SYNC_WINDOW_S,
                    progress: bool = True) -> SyncScore:
    """LSE-D / LSE-C of a clip with syncnet_python's network, computed as SyncNetInstance does.

    face_crops: (N, 224, 224, 3) uint8 RGB (`Clip.face_crops`); wav: (A,) float32 16 kHz.
    Windows: min(N, A / 640) - 5 of them, 5 frames against 20 MFCC frames; distances to audio
    beyond the ends use a zero vector, as in `calc_pdist`.
    """
    wav = check_audio(wav)
    hop = round(sample_rate / fps)
    n_min = min(len(face_crops), len(wav) // hop)
    if len(face_crops) != len(wav) / hop:
        log.info("syncnet_v2: audio %.3f s and video %.3f s differ; using %d frames",
                 len(wav) / sample_rate, len(face_crops) / fps, n_min)
    n_windows = n_min - V2_WINDOW
    if n_windows < 1:
        raise ValueError(f"{n_min} frames are too few for syncnet_v2 (needs > {V2_WINDOW})")
    face_emb, audio_emb = syncnet_v2.embed(net, face_crops, wav, n_windows, sample_rate, batch,
                                   progress)
    return score_embeddings(face_emb, audio_emb, network="syncnet_v2", fps=fps,
                            n_window_frames=V2_WINDOW,
                            n_frames=n_min, max_shift=max_shift, zero_pad=True,
                            window_s=window_s)


def syncnet_v2_score(net: SyncNetV2, frames: Frames, wav: np.ndarray, *,
                     points: np.ndarray | None = None, cfg: Config | None = None,
                     max_shift: int = MAX_SHIFT, progress: bool = True) -> SyncScore:
    """LSE-D / LSE-C of any (frames, audio) pair in one call.

    frames: full (N, H, W, 3) uint8 RGB frames (or an iterable); points: (N, P, 2) landmarks
    for the face boxes (default: found with the landmark detector).
    """
    cfg = cfg or get_config()
    if points is None:
        frames = _rereadable(frames)
        points = track_faces(frames, cfg, progress).points
    boxes = syncnet_v2.crop_boxes(points)
    crops = [syncnet_v2.face_crop(f, b) for f, b in zip(_iter_frames(frames), boxes)]
    if len(crops) != len(boxes):
        raise ValueError(f"landmarks for {len(boxes)} frames but only {len(crops)} frames")
    return syncnet_v2_sync(net, np.stack(crops), wav, cfg.media.fps, cfg.media.sample_rate,
                           max_shift, progress=progress)


# ======================================================================= image metrics


def _pairs(real: np.ndarray, generated: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    real, generated = np.asarray(real), np.asarray(generated)
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"{what}: real frames are {real.shape[1:]}, generated "
                         f"{generated.shape[1:]}; cut both with the same boxes and size")
    n = _common_length(len(real), len(generated), what)
    return real[:n], generated[:n]


def lower_face_psnr(real: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """(N,) PSNR in dB of each pair of (N, H, W, 3) uint8 patches; identical = PSNR_CAP_DB."""
    real, generated = _pairs(real, generated, "PSNR")
    diff = real.astype(np.float32) - generated.astype(np.float32)
    mse = np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0 ** 2 / mse)
    return np.minimum(psnr, PSNR_CAP_DB).astype(np.float32)


def lower_face_ssim(real: np.ndarray, generated: np.ndarray, progress: bool = False) -> np.ndarray:
    """(N,) SSIM (skimage, colour, 7x7 windows) of each pair of (N, H, W, 3) uint8 patches."""
    from skimage.metrics import structural_similarity

    real, generated = _pairs(real, generated, "SSIM")
    return np.array([structural_similarity(a, b, channel_axis=2, data_range=255)
                     for a, b in progress_bar(zip(real, generated), total=len(real),
                                              desc="ssim", enabled=progress)], np.float32)


def landmark_distance(real_lips: np.ndarray, generated_lips: np.ndarray) -> np.ndarray:
    """(N,) LMD: mean distance between corresponding lip points, in crop-box sides.

    Inputs: (N, M, 2) from `Clip.lips()` (positions relative to the crop box, so the number
    does not depend on the video's resolution). 0.01 = 1 % of the lower-face crop.
    """
    real, gen = _pairs(real_lips, generated_lips, "LMD")
    return np.linalg.norm(real - gen, axis=-1).mean(axis=1).astype(np.float32)


@dataclass(frozen=True)
class Correlation:
    """Pearson correlation of two per-frame series, at lag 0 and at the best lag."""

    r: float  # at lag 0
    best_r: float  # the highest over lags -max_lag..max_lag
    best_lag: int  # frames; > 0: the second series runs late
    n: int  # frames compared
    lengths: tuple[int, int]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def correlate_series(a: np.ndarray, b: np.ndarray, max_lag: int = 0) -> Correlation:
    """Correlation of two per-frame series that start at the same frame (lengths may differ).

    Both are cut to the shorter length. With max_lag > 0 the lag of b that correlates best is
    searched too: a lag other than 0 on the demo's ground truth means measured mouth motion
    runs early or late. NaN when a series is constant (no motion to correlate).
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    n = _common_length(len(a), len(b), "correlation")
    r0 = _pearson(a[:n], b[:n])
    best_r, best_lag = r0, 0
    for lag in range(-max_lag, max_lag + 1):
        lo, hi = max(0, -lag), min(n, n - lag)
        if hi - lo < 3 or lag == 0:
            continue
        r = _pearson(a[lo:hi], b[lo + lag: hi + lag])
        if np.isfinite(r) and (not np.isfinite(best_r) or r > best_r):
            best_r, best_lag = r, lag
    return Correlation(r0, best_r, best_lag, n, (len(a), len(b)))


def ground_truth_correlation(opening: np.ndarray, truth: np.ndarray,
                             max_lag: int = 5) -> Correlation:
    """Measured mouth opening against the demo's ground truth (`mouth_open.npy`).

    On the demo the mouth opening that drew each frame is known: landmarks on real frames
    should correlate with it (r > 0.9, lag 0), and a generated clip's should too.
    """
    return correlate_series(truth, opening, max_lag)


# ================================================================ silence, jitter, seam


def silent_frames(wav: np.ndarray, n_frames: int, cfg: Config | None = None,
                  margin: int = SILENCE_MARGIN) -> np.ndarray:
    """(n_frames,) bool: the frame's audio is silent and so are `margin` frames either side.

    Silence is an RMS level per frame below max(check.silence_db, noise floor +
    check.silence_above_floor_db) dB re the loudest frame, the recording check's rule. The
    margin leaves out frames where lips close after (or open before) speech.
    """
    cfg = cfg or get_config()
    db = audio_lib.frame_rms_db(check_audio(wav), cfg.media)
    floor = float(np.percentile(db, 5))
    quiet = db < max(cfg.check.silence_db, floor + cfg.check.silence_above_floor_db)
    quiet = np.concatenate([quiet, np.zeros(max(n_frames - len(quiet), 0), bool)])[:n_frames]
    if margin > 0:
        quiet = scipy.ndimage.binary_erosion(quiet, np.ones(2 * margin + 1, bool),
                                             border_value=1)
    return quiet


def mouth_region(lips: np.ndarray, size: int, ring: int = 0,
                 margin: float = MOUTH_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixels of a `size` patch around the mouth, from lips in crop sides.

    lips: (N, M, 2) from `Clip.lips()`; the median extent over frames plus `margin` of the
    mouth width, below a little more (the jaw drops). ring: crop pixels cut off each side of
    the patch (the inner patch of a 328 crop has ring 4 at crop size 328).
    """
    lo = np.nanmedian(lips.min(axis=1), axis=0)
    hi = np.nanmedian(lips.max(axis=1), axis=0)
    pad = margin * (hi[0] - lo[0])
    box = np.array([lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + 1.5 * pad])
    full = size + 2 * ring  # patch pixels per crop side before the ring is cut off
    box = np.clip(box * full - ring, 0, size).round().astype(int)
    return tuple(int(v) for v in box)  # type: ignore[return-value]


@dataclass(frozen=True)
class SilenceMotion:
    """How still the mouth is while the audio is silent (it should be closed and still)."""

    frames: int  # silent frames
    pixel_change: float  # mean |change| of mouth-region pixels between silent neighbours, 0-255
    opening_change: float  # mean |change| of mouth opening between silent neighbours (face widths)
    opening: float  # mean mouth opening in silent frames (face widths)


def silence_motion(patches: np.ndarray, opening: np.ndarray, silent: np.ndarray,
                   region: tuple[int, int, int, int]) -> SilenceMotion:
    """Mouth motion in silent frames: patches (N, H, W, 3) uint8, opening (N,), silent (N,)
    bool, region (x0, y0, x1, y1) in patch pixels (`mouth_region`)."""
    n = min(len(patches), len(opening), len(silent))
    silent = np.asarray(silent[:n], bool)
    pairs = np.flatnonzero(silent[1:] & silent[:-1])  # frame t and t + 1 both silent
    x0, y0, x1, y1 = region
    if not silent.any():
        log.warning("no silent frames: mouth motion during silence is not measured")
        return SilenceMotion(0, float("nan"), float("nan"), float("nan"))
    if len(pairs):
        a = patches[pairs, y0:y1, x0:x1].astype(np.float32)
        b = patches[pairs + 1, y0:y1, x0:x1].astype(np.float32)
        pixel = float(np.abs(b - a).mean())
        change = float(np.nanmean(np.abs(opening[pairs + 1] - opening[pairs])))
    else:
        pixel = change = float("nan")
    return SilenceMotion(int(silent.sum()), pixel, change, float(np.nanmean(opening[:n][silent])))


# ======================================================================== the mouth itself
# Whole lower-face PSNR / SSIM are dominated by cheeks and chin: a blurred, nearly still mouth
# scored 29.8 dB / 0.94 on a real recording. These look at the mouth alone.


def mouth_sharpness(patches: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """(N,) variance of the Laplacian of the grey mouth region: lips' outline, teeth and the
    inside of the mouth make it high, a smudge low. Compare it with the real clip's."""
    x0, y0, x1, y1 = region
    out = np.empty(len(patches), np.float32)
    for i, patch in enumerate(patches):
        grey = cv2.cvtColor(np.ascontiguousarray(patch[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        out[i] = cv2.Laplacian(grey, cv2.CV_32F).var() if grey.size else np.nan
    return out


def speech_frames(wav: np.ndarray, n_frames: int, cfg: Config | None = None) -> np.ndarray:
    """(n_frames,) bool: the frame's audio is not silent (`silent_frames` without a margin)."""
    return ~silent_frames(wav, n_frames, cfg, margin=0)


def opening_spread(opening: np.ndarray, speech: np.ndarray) -> float:
    """How much the mouth moves while there is speech: p95 - p5 of the opening (face widths)
    over the `speech` frames (`speech_frames`); NaN with fewer than 5 of them."""
    n = min(len(opening), len(speech))
    values = np.asarray(opening[:n], np.float64)[np.asarray(speech[:n], bool)]
    values = values[np.isfinite(values)]
    if len(values) < 5:
        return float("nan")
    lo, hi = np.percentile(values, (5, 95))
    return float(hi - lo)


DETREND_FRAMES = 9  # moving average removed before the envelope correlation (0.36 s)
ENVELOPE_MAX_LAG = 10  # frames searched


def speech_envelope(wav: np.ndarray, n_frames: int, cfg: Config | None = None) -> np.ndarray:
    """(n_frames,) RMS of each video frame's audio (zeros past the end)."""
    cfg = cfg or get_config()
    hop = cfg.media.sample_rate // cfg.media.fps
    x = np.zeros(n_frames * hop, np.float64)
    wav = np.asarray(wav, np.float64)[: len(x)]
    x[: len(wav)] = wav
    return np.sqrt(np.mean(x.reshape(n_frames, hop) ** 2, axis=1))


def _detrended(x: np.ndarray) -> np.ndarray:
    return x - scipy.ndimage.uniform_filter1d(x, DETREND_FRAMES, mode="nearest")


def envelope_sync(opening: np.ndarray, wav: np.ndarray, cfg: Config | None = None,
                  max_lag: int = ENVELOPE_MAX_LAG) -> Correlation:
    """Mouth opening against the speech envelope, both detrended (phrase-level loudness and
    slow head motion removed): a judge of sync that no network trained with the generator
    has seen, and that works for any voice. best_lag > 0: the mouth runs late. It is weak on
    real footage too (best r 0.25-0.33 on 20-60 s real clips): compare with the real clip's."""
    opening = np.asarray(opening, np.float64)
    filled = np.where(np.isfinite(opening), opening,
                      np.nanmedian(opening) if np.isfinite(opening).any() else 0.0)
    env = speech_envelope(wav, len(opening), cfg)
    return correlate_series(_detrended(env), _detrended(filled), max_lag)


def mouth_jitter(lips: np.ndarray) -> np.ndarray:
    """(N - 2,) mean |p[t+1] - 2 p[t] + p[t-1]| of the lip points, in crop-box sides.

    The second difference is ~0 for smooth motion and large for frame-to-frame trembling;
    speech has some, so compare with the real clip's value.
    """
    lips = np.asarray(lips, np.float32)
    if len(lips) < 3:
        raise ValueError(f"jitter needs at least 3 frames, got {len(lips)}")
    accel = lips[2:] - 2 * lips[1:-1] + lips[:-2]  # (N - 2, M, 2)
    return np.linalg.norm(accel, axis=-1).mean(axis=1)


def _seam_bands(mask: np.ndarray, band: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bands just inside the fully pasted area and just outside any pasting, and sectors."""
    full, untouched = mask >= 1 - 1e-3, mask <= 1e-3
    inside = full & ~scipy.ndimage.binary_erosion(full, iterations=band)
    outside = untouched & scipy.ndimage.binary_dilation(~untouched, iterations=band)
    ys, xs = np.nonzero(full)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    angle = np.arctan2(yy - cy, xx - cx)
    sector = ((angle + np.pi) / (2 * np.pi) * SEAM_SECTORS).astype(int) % SEAM_SECTORS
    return inside, outside, sector


def _seam_steps(crop_img: np.ndarray, inside: np.ndarray, outside: np.ndarray,
                sector: np.ndarray) -> np.ndarray:
    """(SEAM_SECTORS, 3) mean colour inside minus outside per sector; NaN where one is empty."""
    img = crop_img.astype(np.float32)
    steps = np.full((SEAM_SECTORS, 3), np.nan, np.float32)
    for s in range(SEAM_SECTORS):
        a, b = inside & (sector == s), outside & (sector == s)
        if a.any() and b.any():
            steps[s] = img[a].mean(axis=0) - img[b].mean(axis=0)
    return steps


def seam_difference_crops(crops: np.ndarray, mask: np.ndarray,
                          references: np.ndarray | None = None,
                          band: int = SEAM_BAND) -> np.ndarray:
    """(N,) colour step across the paste border of (N, S, S, 3) crops, in 0-255 levels.

    mask: (S, S) paste weights in crop pixels (`crop.paste_mask`), or (N, S, S), one per crop
    (`infer.PasteMasks`). Per angular sector of the border, the mean colour of a `band`-px
    band where the mask is 1 minus that of a band where it is 0; the result is the mean
    absolute step over sectors and channels. With `references` (the same crops before
    pasting) the step the frame already had is subtracted, so an unmodified frame scores 0
    and only the step pasting added remains.
    """
    if mask.shape[-2:] != crops.shape[1:3] or (mask.ndim == 3 and len(mask) != len(crops)):
        raise ValueError(f"mask is {mask.shape}, crops are {crops.shape[:3]}; use "
                         "crop.paste_mask(cfg.crop) (or one mask per crop) at cfg.crop.size")
    bands = None if mask.ndim == 3 else _seam_bands(mask, band)
    out = np.empty(len(crops), np.float32)
    for i in range(len(crops)):
        inside, outside, sector = bands or _seam_bands(mask[i], band)
        steps = _seam_steps(crops[i], inside, outside, sector)
        if references is not None:
            steps = steps - _seam_steps(references[i], inside, outside, sector)
        out[i] = np.nanmean(np.abs(steps))
    return out


def seam_difference(frame: np.ndarray, box: np.ndarray, mask: np.ndarray,
                    reference: np.ndarray | None = None, band: int = SEAM_BAND) -> float:
    """Colour step across the border of a pasted mouth region in one full frame.

    frame: (H, W, 3) uint8 RGB after paste-back; box: the crop box it was pasted with; mask:
    (S, S) `crop.paste_mask`; reference: the frame before pasting (then an unmodified frame
    scores exactly 0). See `seam_difference_crops`.
    """
    size = mask.shape[0]
    crops = crop.crop_face(frame, box, size)[None]
    refs = None if reference is None else crop.crop_face(reference, box, size)[None]
    return float(seam_difference_crops(crops, mask, refs, band)[0])


# ============================================================================ gathering


@dataclass
class ClipScores:
    """Every metric of one clip; `summary()` gives the scalars a report table shows."""

    name: str
    n_frames: int
    fps: float
    opening: np.ndarray  # (N,) mouth opening (face widths)
    silent: np.ndarray  # (N,) bool
    silence: SilenceMotion
    jitter: float  # mean second difference of lip points (crop sides)
    sync: SyncScore | None = None
    sync_v2: SyncScore | None = None
    psnr: np.ndarray | None = None  # (N,) vs the real clip, dB
    ssim: np.ndarray | None = None
    lmd: np.ndarray | None = None  # (N,) crop sides
    opening_correlation: Correlation | None = None
    seam: np.ndarray | None = None  # (N,) 0-255 levels
    sharpness: np.ndarray | None = None  # (N,) Laplacian variance in the mouth region
    spread: float = float("nan")  # mouth-opening spread in speech (face widths)
    envelope: Correlation | None = None  # opening vs speech envelope
    mouth_psnr: np.ndarray | None = None  # (N,) of the mouth region alone, vs the real clip
    mouth_ssim: np.ndarray | None = None
    real_sharpness: float = float("nan")  # the real clip's mean, for the ratios
    real_spread: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Scalars: sync_* (own SyncNet), lse_d / lse_c / v2_offset (syncnet_v2), the rest."""
        out: dict[str, Any] = {"frames": self.n_frames}
        if self.sync is not None:
            out.update({f"sync_{k}": v for k, v in self.sync.summary().items()})
        if self.sync_v2 is not None:
            out.update({"lse_d": self.sync_v2.distance, "lse_c": self.sync_v2.confidence,
                        "v2_offset": self.sync_v2.offset})
        for key, series in (("psnr", self.psnr), ("ssim", self.ssim), ("lmd", self.lmd),
                            ("seam", self.seam)):
            if series is not None:
                out[key] = float(np.nanmean(series))
        if self.opening_correlation is not None:
            out["opening_r"] = self.opening_correlation.r
        if self.sharpness is not None:
            out["mouth_sharpness"] = float(np.nanmean(self.sharpness))
            out["sharpness_ratio"] = out["mouth_sharpness"] / self.real_sharpness
        out["opening_spread"] = self.spread
        out["spread_ratio"] = self.spread / self.real_spread
        for key, series in (("mouth_psnr", self.mouth_psnr), ("mouth_ssim", self.mouth_ssim)):
            if series is not None:
                out[key] = float(np.nanmean(series))
        if self.envelope is not None:
            out["envelope_r"] = self.envelope.best_r
            out["envelope_lag"] = self.envelope.best_lag
        out.update({"silent_frames": self.silence.frames,
                    "silence_pixel_change": self.silence.pixel_change,
                    "silence_opening_change": self.silence.opening_change,
                    "silence_opening": self.silence.opening, "jitter": self.jitter,
                    **self.extra})
        return out

    def to_dict(self, series: bool = True) -> dict[str, Any]:
        """JSON-ready: the summary, and with `series` the per-frame arrays and curves."""
        out: dict[str, Any] = {"name": self.name, "fps": self.fps, "summary": self.summary()}
        if not series:
            return out
        out["series"] = {"opening": self.opening, "silent": self.silent.astype(int)}
        for key in ("psnr", "ssim", "lmd", "seam", "sharpness", "mouth_psnr", "mouth_ssim"):
            if getattr(self, key) is not None:
                out["series"][key] = getattr(self, key)
        for key in ("sync", "sync_v2"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key).to_dict()
        if self.opening_correlation is not None:
            out["opening_correlation"] = self.opening_correlation
        return out


def evaluate_clip(clip: Clip, *, real: Clip | None = None,
                  net: syncnet.SyncNet | None = None, net_v2: SyncNetV2 | None = None,
                  paste_mask: np.ndarray | None = None, background: Clip | None = None,
                  max_shift: int = MAX_SHIFT, window_s: float = SYNC_WINDOW_S,
                  device: str | None = None, progress: bool = True) -> ClipScores:
    """All metrics of a clip; call it on the real held-out clip too, for the ceiling.

    real: the real clip of the same frames and audio (PSNR, SSIM, LMD, opening correlation);
    net / net_v2: the person's SyncNet / syncnet_python's (needs `make_clip(face_crops=True)`);
    paste_mask: `crop.paste_mask(cfg.crop)`, or one mask per frame (`infer.PasteMasks`), to
    measure the seam; background: the clip the
    mouths were pasted into (default `real`), whose own border step is subtracted.
    """
    started = time.perf_counter()
    opening = clip.opening()
    silent = silent_frames(clip.audio, clip.n_frames, clip.cfg)
    lips = clip.lips()
    ring = clip.cfg.crop.ring
    patches = clip.patches()
    # the real clip's mouth region for both when there is one: a smudged mouth's own lips are
    # found badly, and the crops are pixel-aligned (cut with the same boxes)
    region = mouth_region(real.lips() if real is not None else lips, patches.shape[1], ring)
    speech = speech_frames(clip.audio, clip.n_frames, clip.cfg)
    scores = ClipScores(name=clip.name, n_frames=clip.n_frames, fps=clip.fps, opening=opening,
                        silent=silent, silence=silence_motion(patches, opening, silent, region),
                        jitter=float(mouth_jitter(lips).mean()),
                        sharpness=mouth_sharpness(patches, region),
                        spread=opening_spread(opening, speech),
                        envelope=envelope_sync(opening, clip.audio, clip.cfg))
    scores.real_sharpness = float(np.nanmean(scores.sharpness))
    scores.real_spread = scores.spread
    if net is not None:
        scores.sync = own_sync(net, patches, clip.audio, clip.cfg, max_shift, window_s, device)
    if net_v2 is not None:
        if clip.face_crops is None:
            raise ValueError(f"clip {clip.name!r} has no syncnet_v2 face crops; make it with "
                             "make_clip(..., face_crops=True) or dataset_clip(..., "
                             "face_crops=True)")
        scores.sync_v2 = syncnet_v2_sync(net_v2, clip.face_crops, clip.audio, clip.fps,
                                         clip.cfg.media.sample_rate, max_shift,
                                         window_s=window_s, progress=progress)
    if real is not None:
        real_patches = real.patches()
        scores.psnr = lower_face_psnr(real_patches, patches)
        scores.ssim = lower_face_ssim(real_patches, patches, progress)
        scores.lmd = landmark_distance(real.lips(), lips)
        scores.opening_correlation = correlate_series(real.opening(), opening, max_lag=3)
        x0, y0, x1, y1 = region
        real_mouths, mouths = real_patches[:, y0:y1, x0:x1], patches[:, y0:y1, x0:x1]
        scores.mouth_psnr = lower_face_psnr(real_mouths, mouths)
        scores.mouth_ssim = lower_face_ssim(real_mouths, mouths)
        scores.real_sharpness = float(np.nanmean(mouth_sharpness(real_patches, region)))
        scores.real_spread = opening_spread(real.opening(), speech)
    background = background or real
    if paste_mask is not None:
        n, refs = clip.n_frames, None
        if background is not None:
            n = _common_length(clip.n_frames, background.n_frames, "seam: clip vs background")
            refs = background.crops[:n]
        mask = paste_mask[:n] if paste_mask.ndim == 3 else paste_mask
        scores.seam = seam_difference_crops(clip.crops[:n], mask, refs)
    scores.extra["seconds"] = round(time.perf_counter() - started, 2)
    return scores


# ----------------------------------------------------------------------------- reports


def make_report(clips: Iterable[ClipScores], name: str, checkpoint: str | None = None,
                extra: dict[str, Any] | None = None, series: bool = True) -> dict[str, Any]:
    """Gather clip scores into one JSON-ready dict: {"name", "checkpoint", "clips": {...}}."""
    report: dict[str, Any] = {"name": name, "checkpoint": checkpoint,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "clips": {}}
    for scores in clips:
        report["clips"][scores.name] = scores.to_dict(series)
    report.update(extra or {})
    return report


def write_report(report: dict[str, Any], name: str, root: str | os.PathLike = "outputs",
                 filename: str = REPORT_FILE) -> Path:
    """Write `root/<name>/eval/<filename>` atomically (files.save_json); returns the path."""
    path = Path(root) / name / "eval" / filename
    files.save_json(path, _json_ready(report))
    return path


def _json_ready(obj: Any) -> Any:
    """NaN and inf have no JSON spelling: they become null."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Correlation):
        return _json_ready(obj.__dict__)
    return obj


@dataclass(frozen=True)
class BestCheckpoint:
    """The checkpoint `choose_best_checkpoint` picked, with the numbers that decided it."""

    index: int
    checkpoint: str | None
    network: str  # "syncnet_v2" when every report has LSE numbers, else "own"
    offset: int
    confidence: float
    distance: float
    reason: str


def _sync_of(report: dict[str, Any], clip: str, network: str) -> tuple[int, float, float]:
    try:
        summary = report["clips"][clip]["summary"]
    except KeyError:
        raise ValueError(f"report {report.get('checkpoint')!r} has no clip {clip!r} "
                         f"(clips: {list(report.get('clips', {}))})") from None
    keys = (("v2_offset", "lse_c", "lse_d") if network == "syncnet_v2"
            else ("sync_offset", "sync_confidence", "sync_distance"))
    if any(summary.get(k) is None for k in keys):
        raise ValueError(f"report {report.get('checkpoint')!r} clip {clip!r} has no sync "
                         "scores; evaluate it with a SyncNet (evaluate_clip(net=...))")
    offset, conf, dist = (summary[k] for k in keys)
    return int(offset), float(conf), float(dist)


MOUTH_KEEP = 0.8  # checkpoints whose mouth scores under this share of the best are not chosen


def mouth_score(summary: dict[str, Any]) -> float | None:
    """How real the mouth is: sharpness ratio × opening-spread ratio (each capped at 1, as
    more than the real mouth is no better); None when the report lacks them."""
    values = [summary.get(k) for k in ("sharpness_ratio", "spread_ratio")]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(min(values[0], 1.0) * min(values[1], 1.0))


def choose_best_checkpoint(reports: Sequence[dict[str, Any]], clip: str = "generated",
                           max_offset: int = 1) -> BestCheckpoint:
    """The checkpoint whose clip is in sync (|offset| <= max_offset) with the highest confidence,
    among those whose mouth is nearly as real as the best one's.

    reports: one `make_report` dict per checkpoint (its "checkpoint" field names it). The
    syncnet_v2 numbers decide when every report has them, else the person's own SyncNet's;
    ties go to the lower distance. The person's SyncNet was what the generator trained
    against, and it rated a blurred, nearly closed mouth above the real one, so first every
    checkpoint whose `mouth_score` is under MOUTH_KEEP of the best is set aside: a blurred or
    still mouth never wins over a sharp, moving one. If no checkpoint is in sync, the highest
    confidence wins and the reason says so.
    """
    if not reports:
        raise ValueError("no reports to choose from; evaluate at least one checkpoint")
    has_v2 = all(r.get("clips", {}).get(clip, {}).get("summary", {}).get("lse_c") is not None
                 for r in reports)
    network = "syncnet_v2" if has_v2 else "own"
    rows = [_sync_of(r, clip, network) for r in reports]
    mouths = [mouth_score(r["clips"][clip]["summary"]) for r in reports]
    known = [m for m in mouths if m is not None]
    keep = ([i for i, m in enumerate(mouths) if m is None or m >= MOUTH_KEEP * max(known)]
            if known else list(range(len(rows))))
    in_sync = [i for i in keep if abs(rows[i][0]) <= max_offset]
    pool = in_sync or keep
    best = max(pool, key=lambda i: (rows[i][1], -rows[i][2]))
    offset, conf, dist = rows[best]
    dropped = len(rows) - len(keep)
    reason = ((f"{dropped} set aside for a less real mouth (under {MOUTH_KEEP:.0%} of the best "
               "mouth score); " if dropped else "") +
              f"highest {network} confidence {conf:.3f} among {len(in_sync)} of {len(rows)} "
              f"checkpoints in sync (|offset| <= {max_offset})" if in_sync else
              f"no checkpoint is in sync (|offset| <= {max_offset}); highest confidence "
              f"{conf:.3f} at offset {offset}")
    return BestCheckpoint(best, reports[best].get("checkpoint"), network, offset, conf, dist,
                          reason)


# ------------------------------------------------------------------------------- figures


def plot_offset_curve(scores: dict[str, SyncScore]) -> Figure:
    """Mean embedding distance against audio shift, one line per clip; the dip is the offset."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for label, score in scores.items():
        line, = ax.plot(score.shifts, score.distances, marker=".", label=(
            f"{label}: offset {score.offset:+d}, conf {score.confidence:.2f}"))
        ax.plot(score.offset, score.distance, "o", color=line.get_color(), ms=8, mfc="none")
    ax.axvline(0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="audio shift (frames; > 0: audio later)", ylabel="mean distance",
           title="sync offset: distance against shift")
    ax.legend(fontsize=8)
    return fig


def plot_sync_over_time(scores: dict[str, SyncScore]) -> Figure:
    """Confidence and offset in sliding windows: where sync holds and where it breaks.

    Offsets of windows with little evidence (confidence under a quarter of the clip's, e.g.
    silence) are drawn as grey crosses: any shift fits them equally well.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    ax_conf, ax_off = fig.subplots(2, 1, sharex=True)
    for label, score in scores.items():
        curve = score.curve
        line, = ax_conf.plot(curve.times, curve.confidences, label=label)
        sure = curve.confidences >= 0.25 * score.confidence
        ax_off.plot(curve.times[sure], curve.offsets[sure], "o", ms=4, color=line.get_color(),
                    label=label)
        ax_off.plot(curve.times[~sure], curve.offsets[~sure], "x", ms=4, color="grey")
    window = next(iter(scores.values())).curve.window_s if scores else SYNC_WINDOW_S
    ax_conf.set(ylabel="confidence", title=f"sync in {window:g} s windows")
    ax_conf.legend(fontsize=8)
    ax_off.axhspan(-1, 1, color="#7fcf8c", alpha=0.3, lw=0)
    ax_off.set(xlabel="time (s)", ylabel="offset (frames)")
    return fig


def plot_mouth_opening(series: dict[str, np.ndarray], fps: float = 25,
                       silent: np.ndarray | None = None,
                       truth: np.ndarray | None = None) -> Figure:
    """Mouth opening over time per clip (real, generated), silence shaded.

    truth: the demo's ground-truth opening, on its own axis (its units are the renderer's).
    """
    from matplotlib.figure import Figure

    from .check import true_runs

    fig = Figure(figsize=(10, 3.2), layout="constrained")
    ax = fig.subplots()
    for label, values in series.items():
        ax.plot(np.arange(len(values)) / fps, values, lw=1, label=label)
    if silent is not None:
        for i, (a, b) in enumerate(true_runs(silent)):
            ax.axvspan(a / fps, b / fps, color="grey", alpha=0.15, lw=0,
                       label="silence" if i == 0 else None)
    if truth is not None:
        twin = ax.twinx()
        twin.plot(np.arange(len(truth)) / fps, truth, color="black", lw=0.8, ls="--")
        twin.set_ylabel("ground truth (dashed)", fontsize=8)
    ax.set(xlabel="time (s)", ylabel="opening (face widths)", title="mouth opening")
    ax.legend(fontsize=8, ncols=4, loc="upper left")
    return fig


TABLE_METRICS = ("sync_offset", "sync_confidence", "lse_d", "lse_c", "envelope_r",
                 "sharpness_ratio", "spread_ratio", "mouth_psnr", "psnr", "ssim", "lmd",
                 "opening_r", "silence_pixel_change", "jitter", "seam")


def metric_table(reports: Sequence[dict[str, Any]], clip: str = "generated",
                 metrics: Sequence[str] = TABLE_METRICS) -> tuple[list[str], list[str],
                                                                   list[list[Any]]]:
    """(row labels, columns, values) of a metric across checkpoints; absent metrics dropped."""
    summaries = [r.get("clips", {}).get(clip, {}).get("summary", {}) for r in reports]
    columns = [m for m in metrics if any(s.get(m) is not None for s in summaries)]
    labels = [str(r.get("checkpoint") or f"report {i}") for i, r in enumerate(reports)]
    return labels, columns, [[s.get(m) for m in columns] for s in summaries]


def plot_metric_table(reports: Sequence[dict[str, Any]], clip: str = "generated",
                      metrics: Sequence[str] = TABLE_METRICS) -> Figure:
    """The metric table across checkpoints as a figure (rows: checkpoints)."""
    from matplotlib.figure import Figure

    labels, columns, values = metric_table(reports, clip, metrics)
    text = [["-" if v is None else (f"{v:+d}" if isinstance(v, int) else f"{v:.4g}")
             for v in row] for row in values]
    fig = Figure(figsize=(max(6.0, 1.1 * len(columns) + 2), 0.4 * len(labels) + 1.0),
                 layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    if columns:
        table = ax.table(cellText=text, rowLabels=labels, colLabels=columns, loc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
    ax.set_title(f"{clip}: metrics per checkpoint", fontsize=9)
    return fig


# ------------------------------------------------------------------------------- video


def mouth_sheet(real: np.ndarray, generated: np.ndarray, region: tuple[int, int, int, int],
                opening: np.ndarray, n: int = 8, side: int = 128) -> np.ndarray:
    """A contact sheet of mouth crops: the real mouth above, the generated below, at the
    real clip's most open frames and a few ordinary ones. real / generated: (N, S, S, 3)
    uint8 patches, pixel-aligned; region: the mouth box (`mouth_region`); returns an RGB
    image (2 · side high), and the frames it shows."""
    x0, y0, x1, y1 = region
    k = min(n, len(real), len(generated))
    valid = np.nan_to_num(np.asarray(opening[: len(real)], np.float64), nan=-1.0)
    order = np.argsort(-valid, kind="stable")
    wide = order[: (k + 1) // 2]
    rest = np.setdiff1d(np.linspace(0, len(real) - 1, k).round().astype(int), wide)
    picks = np.sort(np.concatenate([wide, rest[: k - len(wide)]]))
    height = max(1, round(side * (y1 - y0) / max(x1 - x0, 1)))
    rows = [np.concatenate([cv2.resize(np.ascontiguousarray(p[i, y0:y1, x0:x1]), (side, height),
                                       interpolation=cv2.INTER_AREA) for i in picks], axis=1)
            for p in (real, generated)]
    return np.concatenate(rows, axis=0), picks


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """Write a label in the top-left corner, white on a dark outline."""
    out = frame.copy()
    scale = max(frame.shape[0] / 600, 0.5)
    for colour, thick in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(out, text, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                    max(round(thick * scale), 1), cv2.LINE_AA)
    return out


def side_by_side(left: np.ndarray, right: np.ndarray,
                 labels: tuple[str, str] | None = None) -> np.ndarray:
    """One (H, W1 + W2, 3) frame: right resized to left's height, optional labels."""
    if right.shape[0] != left.shape[0]:
        width = round(right.shape[1] * left.shape[0] / right.shape[0])
        right = cv2.resize(right, (width, left.shape[0]), interpolation=cv2.INTER_AREA)
    if labels:
        left, right = _label(left, labels[0]), _label(right, labels[1])
    return np.concatenate([left, right], axis=1)


def write_side_by_side(path: str | os.PathLike, left: Frames, right: Frames,
                       wav: np.ndarray | None = None, fps: float = 25,
                       sample_rate: int = 16_000, labels: tuple[str, str] = ("real", "generated"),
                       crf: int = 18, preset: str = "medium") -> Path:
    """An H.264 video of two clips side by side (real | generated) with the audio muxed.

    Frames stream (nothing is held); the video stops at the shorter clip.
    """
    count = 0
    with media.VideoWriter(path, fps=fps, crf=crf, preset=preset,
                           audio=None if wav is None else check_audio(wav),
                           sample_rate=sample_rate) as writer:
        for a, b in zip(_iter_frames(left), _iter_frames(right)):
            writer.write(side_by_side(a, b, labels))
            count += 1
        if count == 0:
            raise ValueError("no frames to write: both clips need frames")
    return Path(path)


__all__ = [
    "BestCheckpoint",
    "Clip",
    "ClipScores",
    "Correlation",
    "FaceTrack",
    "SilenceMotion",
    "SyncCurve",
    "SyncNetV2",
    "SyncNetV2WeightsError",
    "SyncScore",
    "check_audio",
    "choose_best_checkpoint",
    "correlate_series",
    "crop_points",
    "dataset_clip",
    "dataset_track",
    "envelope_sync",
    "evaluate_clip",
    "ground_truth_correlation",
    "heldout_range",
    "landmark_distance",
    "lip_points",
    "load_syncnet_v2",
    "lower_face_psnr",
    "lower_face_ssim",
    "make_clip",
    "make_report",
    "mel_windows",
    "metric_table",
    "mouth_jitter",
    "mouth_region",
    "mouth_score",
    "mouth_sharpness",
    "mouth_sheet",
    "opening_spread",
    "own_sync",
    "plot_metric_table",
    "plot_mouth_opening",
    "plot_offset_curve",
    "plot_sync_over_time",
    "score_embeddings",
    "seam_difference",
    "seam_difference_crops",
    "shift_distances",
    "side_by_side",
    "silence_motion",
    "silent_frames",
    "speech_envelope",
    "speech_frames",
    "sync_curve",
    "sync_score",
    "syncnet_v2_score",
    "syncnet_v2_sync",
    "track_faces",
    "write_report",
    "write_side_by_side",
]
