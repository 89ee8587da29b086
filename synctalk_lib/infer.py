"""Inference: a trained person speaks new audio (docs/design.md §6).

    audio chunks ─> MelStream ─> audio encoder ─> features + silence flags (FeatureStream)
                 ─> template frame per output frame (TemplatePlan, TemplateReader)
                 ─> generator in batches (backends) ─> colour-matched feathered paste-back
                 ─> frames (LipSyncStream) ─> H.264 + audio (VideoWriter), atomically

Everything streams: the offline `Avatar.render` is the live `LipSyncStream` fed with blocks
of a file, so both give the same frames, and memory does not grow with the audio's length.
A `whisper` generator's features stream too, window by window on a fixed grid (whisper.py),
so live and offline frames stay equal. A `hubert` generator is the exception: HuBERT needs the
whole audio, so its features are computed first (in chunks, hubert.py) and held (8 kB per
frame); the frames then stream alike.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import functools
import hashlib
import json
import logging
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import scipy.ndimage
import soundfile as sf
import torch

from . import audio as audio_lib
from . import backends, crop, data, features, files, hubert, media, syncnet, templates, unet
from . import whisper as whisper_lib
from .checkpoint import CheckpointError
from .config import Config, get_config
from .data import AUDIO_WINDOW, closed_mouth_frames, still_reference_index
from .dataset import PreparedDataset, PreprocessError, load_dataset
from .device import pick_device
from .generators import load_generator, resolve_checkpoint
from .progress import progress_bar

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac", ".webm", ".mp4")
MIN_AUDIO_S = 0.2  # shorter audio cannot fill one mel window: refuse rather than guess
# speech level (dBFS) at which infer.silence_db holds as set: that of broadcast speech and of
# espeak-ng; audio of another level has its silence threshold moved by the difference
REFERENCE_SPEECH_DB = -14.0
SPEECH_PERCENTILE = 95  # an audio's speech level: this percentile of its 40 ms frame levels
MAX_SILENCE_SHIFT_DB = 30.0  # the silence threshold never moves further than this
MIN_SPEECH_DB = -70.0  # an audio whose speech level is lower holds no speech


PAUSE_CANDIDATES = 8  # the person's most closed-mouth frames tried for the pause feature


class InferError(RuntimeError):
    """Inference cannot run: unknown person, no checkpoint, unusable audio …"""


# ---------------------------------------------------------------------- audio → features


def frame_level_db(samples: np.ndarray) -> float:
    """Loudness of one frame's samples in dBFS (digital silence → -120)."""
    return float(frame_levels_db(samples, len(samples))[0]) if len(samples) else -120.0


def frame_levels_db(wav: np.ndarray, hop: int) -> np.ndarray:
    """(ceil(N / hop),) level in dBFS of each `hop`-sample frame of wav (the last may be
    shorter); digital silence → -120."""
    wav = np.asarray(wav, np.float64).reshape(-1)
    n = -(-len(wav) // hop)
    padded = np.zeros(n * hop)
    padded[:len(wav)] = wav
    sums = np.square(padded).reshape(n, hop).sum(axis=1)
    counts = np.full(n, hop)
    if n and len(wav) % hop:
        counts[-1] = len(wav) % hop
    return 20 * np.log10(np.maximum(np.sqrt(sums / counts), 1e-6))


def speech_level_db(levels: np.ndarray) -> float:
    """An audio's speech level from its frame levels (dBFS): a high percentile, the level of
    its louder syllables, which pauses do not move."""
    levels = np.asarray(levels, np.float64)
    return float(np.percentile(levels, SPEECH_PERCENTILE)) if len(levels) else -120.0


def silence_offset_db(cfg: Config, speech_db: float | None) -> float:
    """dB added to frame levels before the `infer.silence_db` test, for audio whose speech
    level is `speech_db` (None: unknown, as live audio; 0 then). Speech in a quiet recording
    (the shared real clips lie between -11 and -30 dBFS) would otherwise count as pauses, and
    a loud recording's pauses as speech. Audio quieter than -70 dBFS throughout (a muted
    microphone) holds no speech to measure: 0."""
    if speech_db is None or not cfg.infer.relative_silence or speech_db < MIN_SPEECH_DB:
        return 0.0
    return float(np.clip(REFERENCE_SPEECH_DB - speech_db, -MAX_SILENCE_SHIFT_DB,
                         MAX_SILENCE_SHIFT_DB))


def digital_silence_feature(encode: Callable[[np.ndarray], np.ndarray], cfg: Config) -> np.ndarray:
    """(F,) what a mel audio encoder makes of digital silence (every mel bin at its floor)."""
    mute = np.full((1, 1, cfg.audio.n_mels, cfg.audio.mel_window), -cfg.audio.max_abs_value,
                   np.float32)
    return encode(mute)[0]


class FeatureStream:
    """Audio in, per-frame generator inputs out, each as soon as it can no longer change.

    Frame t needs: its mel window (0.2 s from t), the features of t-8 .. t+7 (the generator's
    audio window) and the silence decisions of those frames (a quiet stretch counts as silence
    only once it has lasted `min_silence` frames). Silent frames all get one audio window,
    `silence` (`Avatar.pause_window`, (16, F); an (F,) feature is repeated; default: digital
    silence's), so pauses give one still, closed mouth instead of noise-driven twitching.

    encode: (B, 1, 80, 16) mel windows -> (B, F), run as the audio arrives (`ave`). A
    `source` with push(samples) / finish(n_frames) returning feature rows in frame order
    (`whisper.WhisperStream`) is fed the audio instead. Features that need the whole audio
    (`hubert`) come instead as `precomputed` (T, F), computed up front; the audio pushed must then
    be that same audio. Without `encode`, `silence` must be given. silence_offset: dB
    added to frame levels before the silence test (`silence_offset_db`).
    """

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray] | None, cfg: Config,
                 precomputed: np.ndarray | None = None, silence: np.ndarray | None = None,
                 silence_offset: float = 0.0, source=None) -> None:
        self.cfg, self._encode = cfg, encode
        self._given = precomputed
        self._source = source
        self.silence_offset = silence_offset
        self._quiet_below = cfg.infer.silence_db - silence_offset
        self.mel = audio_lib.MelStream(cfg.audio, cfg.media.sample_rate)
        self.hop = cfg.media.sample_rate // cfg.media.fps  # samples per video frame
        self.min_silence = max(1, round(cfg.infer.min_silence_s * cfg.media.fps))
        self.pause_lead, self.pause_trail = cfg.infer.pause_lead_frames, cfg.infer.pause_trail_frames
        reach = AUDIO_WINDOW // 2 - 1  # frames after t whose decisions n_ready waits for
        if not (0 <= self.pause_lead <= reach and 0 <= self.pause_trail <= AUDIO_WINDOW // 2):
            raise ValueError(f"infer.pause_lead_frames must lie in 0..{reach} and "
                             f"infer.pause_trail_frames in 0..{AUDIO_WINDOW // 2}")
        self._mel_cols: list[np.ndarray] = []  # mel frames from _mel_base on
        self._mel_base = 0
        self._tail = np.zeros(0, np.float32)  # samples of the frame not yet complete
        self.raw_quiet: list[bool] = []
        self.silent: list[bool] = []  # final decisions, frame 0 on
        self._run_start = 0
        self._features: dict[int, np.ndarray] = {}
        self.n_featured = 0  # frames 0..n_featured-1 have features
        self.n_frames: int | None = None  # known after finish()
        self.n_samples = 0
        if precomputed is not None:
            if silence is None:
                raise ValueError("precomputed features need the silence feature too")
            self.n_featured = len(precomputed)
        silence = digital_silence_feature(encode, cfg) if silence is None else silence
        silence = np.asarray(silence, np.float32)
        self.silence_window = (silence if silence.ndim == 2
                               else np.tile(silence, (AUDIO_WINDOW, 1)))  # (16, F)
        if self.silence_window.shape[0] != AUDIO_WINDOW:
            raise ValueError(f"a pause window has {AUDIO_WINDOW} rows, got "
                             f"{self.silence_window.shape}")

    # -- input
    def push(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.n_samples += len(samples)
        if self._source is not None:
            self._add(self._source.push(samples))
        elif self._given is None:
            self._mel_cols.extend(self.mel.push(samples))
        self._tail = np.concatenate([self._tail, samples])
        n_whole = len(self._tail) // self.hop
        levels = frame_levels_db(self._tail[:n_whole * self.hop], self.hop)
        self.raw_quiet.extend((levels < self._quiet_below).tolist())
        self._tail = self._tail[n_whole * self.hop:]
        self._decide(final=False)
        self._featurise(final=False)

    def finish(self) -> None:
        self.n_frames = audio_lib.n_video_frames(self.n_samples, self.cfg.media)
        if self._given is not None and len(self._given) != self.n_frames:
            raise InferError(f"features were computed for {len(self._given)} frames but the "
                             f"audio pushed makes {self.n_frames}; push the audio the features "
                             "were computed from")
        if self._source is not None:
            self._add(self._source.finish(self.n_frames))
        elif self._given is None:
            self._mel_cols.extend(self.mel.finish())
        while len(self.raw_quiet) < self.n_frames:  # the last, partial frame
            self.raw_quiet.append(frame_level_db(self._tail) < self._quiet_below)
            self._tail = self._tail[:0]
        del self.raw_quiet[self.n_frames:]
        self._decide(final=True)
        self._featurise(final=True)

    # -- silence
    def _decide(self, final: bool) -> None:
        raw, need = self.raw_quiet, self.min_silence
        while len(self.silent) < len(raw):
            u = len(self.silent)
            if not raw[u]:
                self.silent.append(False)
                continue
            if u == 0 or not raw[u - 1]:
                self._run_start = u
            a = self._run_start
            window = raw[a: a + need]
            if len(window) == need and all(window):
                self.silent.append(True)
            elif not all(raw[u:]) or final:
                self.silent.append(False)  # the quiet run ended (or the audio did) too soon
            else:
                break  # wait for more audio

    # -- features
    def _add(self, rows: np.ndarray) -> None:
        for row in rows:
            self._features[self.n_featured] = row
            self.n_featured += 1

    def _featurise(self, final: bool) -> None:
        if self._given is not None or self._source is not None:
            return
        cfg, win = self.cfg, self.cfg.audio.mel_window
        n_mel = self._mel_base + len(self._mel_cols)
        if final:
            upto = self.n_frames
        else:
            per_frame = audio_lib.mel_frames_per_video_frame(cfg.audio, cfg.media)
            candidates = np.arange(self.n_featured, int(n_mel / per_frame) + 2)
            starts = audio_lib.mel_window_start(candidates, cfg.audio, cfg.media)
            upto = self.n_featured + int(np.sum(starts + win <= n_mel))
        if upto <= self.n_featured:
            return
        mel = np.asarray(self._mel_cols, np.float32).reshape(-1, cfg.audio.n_mels)
        if final and n_mel < win:  # audio shorter than one window: pad with the quietest value
            pad = np.full((win - n_mel, cfg.audio.n_mels), -cfg.audio.max_abs_value, np.float32)
            mel, n_mel = np.concatenate([mel, pad]), win
        frames = np.arange(self.n_featured, upto)
        starts = audio_lib.mel_window_start(frames, cfg.audio, cfg.media)
        starts = np.minimum(starts, n_mel - win) - self._mel_base
        windows = mel[starts[:, None] + np.arange(win)[None, :]].transpose(0, 2, 1)
        feats = self._encode(np.ascontiguousarray(windows)[:, None])
        for t, f in zip(frames.tolist(), feats, strict=True):
            self._features[t] = f
        self.n_featured = upto
        if not final:  # mel frames no later window can use
            keep_from = int(audio_lib.mel_window_start(upto, cfg.audio, cfg.media))
            drop = max(0, keep_from - self._mel_base)
            del self._mel_cols[:drop]
            self._mel_base += drop

    # -- output
    def n_ready(self) -> int:
        """Frames 0..n_ready-1 have final generator inputs."""
        if self.n_frames is not None:
            return min(self.n_frames, self.n_featured, len(self.silent))
        return max(0, min(self.n_featured, len(self.silent)) - AUDIO_WINDOW // 2 + 1)

    def window(self, t: int) -> np.ndarray:
        """(16, F) features of frames t-8 .. t+7 (edges repeated, as in training).

        A pause frame gets the pause window instead, whole: most pauses are shorter than the
        window, and pause rows between speech rows, which the generator never saw in
        training, drew a half-open mouth (docs/real_footage.md). Its last
        `infer.pause_lead_frames` and first `pause_trail_frames` keep the audio's own rows,
        as do speech frames: the window sees 7 frames ahead, and with the real audio there
        the lips part before the speech and close after it as the person's did (replacing
        those rows cost opening r 0.66 -> 0.56-0.62 on real_talk_e's tail).
        """
        last = (self.n_frames or self.n_featured) - 1
        lo = max(t - self.pause_trail, 0)
        hi = min(t + self.pause_lead, last)
        if all(self.silent[u] for u in range(lo, hi + 1)):
            return self.silence_window
        rows = []
        for u in range(t - AUDIO_WINDOW // 2, t + AUDIO_WINDOW - AUDIO_WINDOW // 2):
            u = min(max(u, 0), last)
            rows.append(self._given[u] if self._given is not None else self._features[u])
        return np.stack(rows)

    def release(self, before: int) -> None:
        """Forget features no window of a frame >= `before` uses."""
        for u in [u for u in self._features if u < before - AUDIO_WINDOW // 2]:
            del self._features[u]


# ---------------------------------------------------------------------- paste-back


class Compositor:
    """Puts generated mouth patches back into full frames without a visible box.

    Only the region of the frame's paste weights (`PasteMasks`) is replaced, through their
    feathered border. Before that the patch's colour is corrected where it meets the real
    frame: the real-minus-generated difference in the fade band is spread smoothly over the
    patch (a normalised blur, in the spirit of gradient-domain blending), so a colour cast of
    the generator, even one that varies across the face, leaves no step at the border while
    the mouth itself keeps its generated content.
    """

    SCALE = 4  # the correction is smooth: compute it at a quarter of the resolution
    SIGMA = 0.08  # of the inner side: how far the band's correction reaches inwards
    FLOOR = 0.3

    def __init__(self, cfg: Config, crop_cfg) -> None:
        self.ccfg = crop_cfg
        n = crop_cfg.inner // self.SCALE
        self._small = (n, n)
        self._sigma = self.SIGMA * n
        self.colour_match = cfg.infer.colour_match

    def _blur(self, img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (0, 0), self._sigma, borderType=cv2.BORDER_REFLECT)

    def correction(self, real: np.ndarray, patch: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """(inner, inner, 3) float32 to add to `patch` so it meets `real` in the fade band of
        `alpha` (the crop's paste weights)."""
        inner = crop.inner(alpha, self.ccfg)
        band = cv2.resize(((inner > 0.02) & (inner < 0.98)).astype(np.float32), self._small,
                          interpolation=cv2.INTER_AREA)
        # dividing by the blurred band makes the correction exact in the band; the floor makes
        # it fade out a few sigmas inside, so the mouth keeps the generator's own colours
        norm = np.maximum(self._blur(band), self.FLOOR)
        diff = cv2.resize(real.astype(np.float32) - patch.astype(np.float32), self._small,
                          interpolation=cv2.INTER_AREA)
        spread = self._blur(diff * band[..., None]) / norm[..., None]
        n = self.ccfg.inner
        return cv2.resize(spread, (n, n), interpolation=cv2.INTER_LINEAR)

    def patch_in_crop(self, crop_img: np.ndarray, patch: np.ndarray,
                      alpha: np.ndarray) -> np.ndarray:
        """The crop with its inner patch replaced by the (upscaled, colour-matched) output."""
        n = self.ccfg.inner
        if patch.shape[0] != n:  # bicubic: a sharper lower face from a small model (+2-3 dB)
            patch = cv2.resize(patch, (n, n), interpolation=cv2.INTER_CUBIC)
        if self.colour_match:
            fixed = patch.astype(np.float32) + self.correction(crop.inner(crop_img, self.ccfg),
                                                               patch, alpha)
            patch = np.clip(np.rint(fixed), 0, 255).astype(np.uint8)
        return crop.with_inner(crop_img, patch, self.ccfg)

    def __call__(self, frame: np.ndarray, crop_img: np.ndarray, box: np.ndarray,
                 patch: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        return crop.paste_back(frame, self.patch_in_crop(crop_img, patch, alpha), box, alpha)

    def paste_yuv(self, frame: np.ndarray, crop_img: np.ndarray, box: np.ndarray,
                  patch: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """The same paste-back on an I420 frame ((H * 3 / 2, W), a new one is returned).

        Only the region the paste can reach is converted to RGB and back; of it only the
        pixels the paste changed (and the chroma samples they share) are written, so the
        rest of the frame keeps its decoded planes exactly. At 1080p this saves converting
        two full frames, the decoder's and the encoder's.
        """
        height, width = frame.shape[0] * 2 // 3, frame.shape[1]
        x0, y0, x1, y1 = media.even_box(*crop.paste_region(box, width, height), width, height)
        out = frame.copy()
        if x1 <= x0 or y1 <= y0:
            return out
        rgb = media.yuv_to_rgb(media.yuv_region(frame, x0, y0, x1, y1))
        shifted = np.asarray(box, np.float64) - np.array([x0, y0, x0, y0], np.float64)
        pasted = self(rgb, crop_img, shifted, patch, alpha)
        media.put_yuv_region(out, media.rgb_to_yuv(pasted), x0, y0,
                             changed=(pasted != rgb).any(axis=2))
        return out


class PasteMasks:
    """Paste-back weights of each template frame, `masks[t]` -> (size, size) float32.

    `infer.paste_region="face"`: the frame's own lower-face region (`crop.lower_face_mask`)
    from landmarks smoothed over `crop.smooth_frames` frames, so its border does not jitter;
    "rect": the masked rectangle (SyncTalk_2D), the same for every frame. Schemes without a
    jaw contour (SyncTalk_2D's 110 points) and frames without landmarks get the rectangle.
    """

    CACHE = 256  # masks kept (bouncing revisits the frames near its turning points)

    def __init__(self, ds: PreparedDataset, cfg: Config) -> None:
        region = cfg.infer.paste_region
        if region not in ("face", "rect"):
            raise InferError(f"unknown infer.paste_region {region!r}; choose 'face' or 'rect'")
        self.crop_cfg, self.scheme, self.feather = ds.config.crop, ds.scheme, cfg.infer.feather
        self.rect = crop.paste_mask(self.crop_cfg, self.feather)
        self.boxes = ds.boxes()
        self.points = None
        if region == "face" and ds.scheme.has_jaw:
            window = max(int(self.crop_cfg.smooth_frames), 1)
            self.points = scipy.ndimage.uniform_filter1d(
                ds.points().astype(np.float32), size=window, axis=0, mode="nearest")
        elif region == "face":
            log.info("%s landmarks have no jaw contour: pasting the whole rectangle",
                     ds.scheme.name)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()  # streams of one avatar may composite in parallel

    def __getitem__(self, t: int) -> np.ndarray:
        if self.points is None:
            return self.rect
        t = int(t)
        with self._lock:
            if t in self._cache:
                self._cache.move_to_end(t)
                return self._cache[t]
        alpha = crop.lower_face_mask(self.points[t], self.boxes[t], self.scheme,
                                     self.crop_cfg, self.feather)
        alpha = self.rect if alpha is None else alpha
        with self._lock:
            self._cache[t] = alpha
            if len(self._cache) > self.CACHE:
                self._cache.popitem(last=False)
        return alpha


# ---------------------------------------------------------------------- the person


@dataclass
class RenderResult:
    path: Path
    n_frames: int
    seconds: float  # wall time of the whole render
    backend: str
    templates: list[int]  # the person's frame under each output frame
    silent: list[bool]  # frames whose audio counted as silence
    silence_offset: float = 0.0  # dB added to the audio's frame levels for the silence test

    @property
    def silent_frames(self) -> int:
        return int(sum(self.silent))

    @property
    def fps(self) -> float:
        return self.n_frames / max(self.seconds, 1e-9)


def _encoder_for(ds: PreparedDataset, ckpt_dir: Path, ave_weights: str | Path | None,
                 backend: str, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """The audio encoder whose features the generator was trained on, as a numpy function."""
    if ave_weights is None:
        key = ds.paths.cached("aud_ave.json")
        source = Path(json.loads(key.read_text())["encoder"]) if key.is_file() else None
        if source is not None and source.name != "syncnet.pt":
            ave_weights = source
    if ave_weights is not None:
        encoder = syncnet.AudioEncoder()
        syncnet.load_ave_weights(encoder, ave_weights)
        source = Path(ave_weights)
    else:
        source = ckpt_dir / "syncnet.pt"
        if not source.is_file():
            raise InferError(f"{source} is missing: the generator's audio features come from "
                             "the person's SyncNet; train again or pass ave_weights=")
        encoder = syncnet.load_syncnet(source, device="cpu").audio_encoder
    encoder.eval()
    if backend == "onnx":
        return backends.cached_onnx(encoder, {"mel": torch.zeros(1, 1, 80, 16)}, source,
                                    "audio_encoder")
    encoder.to(device)

    def encode(windows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return encoder(torch.from_numpy(windows).to(device)).float().cpu().numpy()

    return encode


def _hubert_for(cfg: Config, checkpoints_root: str | Path,
                device: torch.device) -> hubert.HubertFeatures:
    """The HuBERT model of a `hubert` generator, from the local folder (never downloaded)."""
    try:
        return hubert.HubertFeatures.load(
            hubert.resolve_dir(cfg.model.hubert_dir, checkpoints_root), cfg.media, device)
    except hubert.HubertError as exc:
        raise InferError(f"{exc} (this generator was trained on HuBERT features)") from exc


def _whisper_for(cfg: Config, device: torch.device, where: Path
                 ) -> tuple[whisper_lib.WhisperFeatures, str]:
    """The Whisper encoder of a `whisper` generator (its saved settings), and its source."""
    try:
        source = whisper_lib.resolve_source(cfg.whisper.model_dir)
        speech = whisper_lib.WhisperFeatures.load(source, cfg.whisper, cfg.media, device)
        features.check_dim(speech, cfg, str(where))
    except whisper_lib.WhisperError as exc:
        raise InferError(f"{exc} (this generator was trained on Whisper features)") from exc
    return speech, str(source)


class Avatar:
    """A trained person ready to speak: dataset, generator backend and audio features
    (`encode`, the mel audio encoder, for `ave`; `speech`, a speech model, for `whisper` and
    `hubert`, with `recording_features`, the recording's own cached features)."""

    def __init__(self, name: str, cfg: Config, ds: PreparedDataset, backend: backends.Backend,
                 encode: Callable[[np.ndarray], np.ndarray] | None, checkpoint: Path,
                 output_root: Path,
                 speech: hubert.HubertFeatures | whisper_lib.WhisperFeatures | None = None,
                 recording_features: Callable[[], np.ndarray] | None = None,
                 progress: bool = True) -> None:
        if (encode is None) == (speech is None):
            raise ValueError("give exactly one of encode (ave) and speech (whisper, hubert)")
        self.name, self.cfg, self.dataset = name, cfg, ds
        self.backend, self.encode, self.speech = backend, encode, speech
        self.recording_features = recording_features
        self.device = getattr(backend, "device", torch.device("cpu"))  # onnxruntime: CPU
        self.checkpoint, self.output_root = checkpoint, output_root
        self.crop_cfg = ds.config.crop
        self.crops = ds.crops()
        self.boxes = ds.boxes()
        self.n_frames = ds.n_frames
        self.compositor = Compositor(cfg, self.crop_cfg)
        self.paste_masks = PasteMasks(ds, cfg)
        self.reader = templates.TemplateReader(ds.frames(), ds.paths.cache, cfg.infer.template_gop,
                                               progress=progress)
        self.centres = (self.boxes[:, :2] + self.boxes[:, 2:]) / 2

    def release_file_pages(self) -> bool:
        """Unmap the crop cache's resident pages from this process (False where it cannot).

        Why: the crops are memory-mapped (`PreparedDataset.crops`), and a long render visits
        every template frame, so the whole file (about 480 MB for a minute at 328 px) stays
        in the process's RSS afterwards. Those pages are clean page cache, reclaimable and
        no leak, but RSS is what a user or a container limit watches. The file stays in the
        kernel's page cache, so the next request maps it back with minor faults, no disk
        reads. Safe while another thread reads: a dropped page is simply faulted in again.
        """
        held = getattr(self.crops, "_mmap", None)  # np.memmap's mapping (numpy internal)
        if not isinstance(held, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
            return False
        try:
            held.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or a kernel without it
            return False
        return True

    @classmethod
    def load(cls, name: str, dataset_root: str | Path = "dataset",
             checkpoints_root: str | Path = "checkpoints", output_root: str | Path = "outputs",
             checkpoint: str | Path | None = None, preset: str | None = None,
             overrides: dict | None = None, backend: str | None = None,
             device: str | None = None, ave_weights: str | Path | None = None,
             progress: bool = True) -> Avatar:
        """Load person `name`: checkpoints/<name>/generator_best.pt (or `checkpoint`: "best",
        "latest" or a file, see `generators.resolve_checkpoint`).

        preset: if given, the checkpoint must have been trained with it (clear error if not);
        overrides: e.g. {"infer.mode": "core", "infer.batch_size": 16}; backend: "auto",
        "torch" or "onnx" (default: the config's, normally auto); progress: a bar while the
        person's frames are cached for reading (once per recording).
        """
        try:
            path = resolve_checkpoint(name, checkpoints_root, checkpoint)
        except CheckpointError as exc:
            raise InferError(str(exc)) from exc
        try:
            ds = load_dataset(name, dataset_root)
        except PreprocessError as exc:
            raise InferError(f"{exc} (the avatar's frames come from its dataset)") from exc
        dev = pick_device(device)
        want = get_config(preset) if preset else None
        model, saved = load_generator(path, want, device="cpu")
        if preset and saved.preset != preset:
            raise CheckpointError(f"{path} was trained with preset {saved.preset!r}, not "
                                  f"{preset!r}; leave preset out or train a {preset} model")
        cfg = saved.override(overrides or {})
        mode = cfg.model.audio_mode
        if mode not in ("ave", "hubert", "whisper"):
            raise InferError(f"{path} was trained with audio_mode {mode!r}; inference supports "
                             "'ave', 'whisper' and 'hubert'")
        if mode == "whisper":  # before the backend: a missing model is said first
            speech, source = _whisper_for(cfg, dev, path)
        kind = backends.choose(backend or cfg.infer.backend, dev)
        chosen = backends.make_backend(model, cfg, path, kind, str(dev))
        log.info("%s: %s, %s", name, path.name, chosen.describe())
        if mode == "whisper":
            avatar = cls(name, cfg, ds, chosen, None, path, Path(output_root), speech=speech,
                         recording_features=lambda: features.whisper_features_for(
                             ds, speech, source), progress=progress)
        elif mode == "hubert":
            hubert_dir = hubert.resolve_dir(cfg.model.hubert_dir, checkpoints_root)
            avatar = cls(name, cfg, ds, chosen, None, path, Path(output_root),
                         speech=_hubert_for(cfg, checkpoints_root, dev),
                         recording_features=lambda: features.hubert_features_for(
                             ds, cfg, hubert_dir, str(dev)), progress=progress)
        else:
            encode = _encoder_for(ds, path.parent, ave_weights, kind, dev)
            avatar = cls(name, cfg, ds, chosen, encode, path, Path(output_root),
                         progress=progress)
        if cfg.infer.mouth_gain != 1:
            avatar.apply_mouth_gain(model, kind, str(dev))
        return avatar

    def apply_mouth_gain(self, model: unet.Generator, kind: str, device: str) -> None:
        """Rebuild the backend with `infer.mouth_gain` (`unet.Generator.set_audio_gain`),
        pivoting on the pause window's audio code so pauses stay as closed as before.

        The pause window is chosen first, with the plain generator: its choice compares
        mouths drawn without the gain.
        """
        gain = self.cfg.infer.mouth_gain
        window = torch.from_numpy(np.asarray(self.pause_window, np.float32)[None])
        window = window.to(next(model.parameters()).device)
        pivot = model.audio_latent(unet.audio_window_to_input(window, self.cfg.model.audio_mode))
        model.set_audio_gain(gain, pivot)
        digest = hashlib.sha256(pivot.float().cpu().numpy().tobytes()).hexdigest()[:8]
        self.backend = backends.make_backend(model, self.cfg, self.checkpoint, kind, device,
                                             tag=f"{self.checkpoint.stem}-gain{gain:g}-{digest}")
        log.info("%s: mouth gain %g (%s)", self.name, gain, self.backend.describe())

    @functools.cached_property
    def speech_silence(self) -> np.ndarray:
        """(F,) the speech model's features of digital silence (whisper, hubert avatars)."""
        return self.speech.silence()

    @functools.cached_property
    def pause_window(self) -> np.ndarray:
        """(16, F) the audio window of every frame of a pause (`infer.pause_feature`).

        Digital silence is the obvious choice, but a generator trained on a recording whose
        pauses hold room noise has never seen it, nor any window of one feature repeated 16
        times: on real_talk_e both drew lips 0.035-0.045 face widths apart where the real
        closed mouth has 0.015 (docs/real_footage.md). The real windows of the person's most
        closed-mouth frames are inputs it was trained on, with a closed mouth as the target
        (0.014-0.024 there). Each candidate drives the generator over the still reference
        frame, and the one whose mouth comes out closest to that frame's real, closed mouth
        is kept.
        """
        mode = self.cfg.infer.pause_feature
        if mode not in ("calibrated", "digital"):
            raise InferError(f"unknown infer.pause_feature {mode!r}; use 'calibrated' or "
                             "'digital'")
        digital = (self.speech_silence if self.speech is not None
                   else digital_silence_feature(self.encode, self.cfg))
        digital = np.tile(np.asarray(digital, np.float32), (AUDIO_WINDOW, 1))
        closed = closed_mouth_frames(self.dataset, self.cfg)[:PAUSE_CANDIDATES]
        if mode == "digital" or not len(closed):
            return digital
        candidates = np.concatenate([digital[None], self.recording_windows(closed)])
        errors = self.closed_mouth_errors(candidates)
        best = int(np.argmin(errors))
        names = ["digital silence", *(f"the window of closed-mouth frame {t}" for t in closed)]
        log.info("pauses get %s (mouth %.1f levels from the closed reference; digital "
                 "silence: %.1f)", names[best], errors[best], errors[0])
        return candidates[best].astype(np.float32)

    def recording_windows(self, frames: np.ndarray) -> np.ndarray:
        """(len(frames), 16, F) the generator's audio windows of frames of the person's
        recording, as training built them (frames t-8 .. t+7, edges repeated)."""
        frames = np.asarray(frames, int)
        offsets = np.arange(AUDIO_WINDOW) - AUDIO_WINDOW // 2
        rows = np.clip(frames[:, None] + offsets[None], 0, self.dataset.n_frames - 1)
        needed, where = np.unique(rows, return_inverse=True)
        return self._recording_features(needed)[where.reshape(rows.shape)]

    def _recording_features(self, frames: np.ndarray) -> np.ndarray:
        """(len(frames), F) the generator's audio features of frames of the person's recording."""
        if self.speech is None:
            mel = np.asarray(self.dataset.mel_windows()[frames], np.float32)
            return self.encode(np.ascontiguousarray(mel[:, None]))
        if self.recording_features is None:
            return self.speech(self.dataset.wav(), self.dataset.n_frames)[frames]
        return self.recording_features()[frames]

    def closed_mouth_errors(self, windows: np.ndarray) -> np.ndarray:
        """(K,) how far (mean |difference|, 0-255, in the mouth box) the generator's mouth is
        from the still reference frame's own when that frame is the template and the audio
        window is windows[k] ((K, 16, F))."""
        real = self.template_patch(still_reference_index(self.dataset, self.cfg))
        target = real.transpose(2, 0, 1).astype(np.float32) / 255
        mx0, my0, mx1, my1 = data.mouth_box(self.dataset, self.cfg.model.image_size)
        errors = []
        for i in range(0, len(windows), self.cfg.infer.batch_size):
            batch = np.asarray(windows[i: i + self.cfg.infer.batch_size], np.float32)
            y = self.generate(np.repeat(real[None], len(batch), axis=0), batch)
            errors.extend(np.abs(y - target)[:, :, my0:my1, mx0:mx1].mean(axis=(1, 2, 3)) * 255)
        return np.asarray(errors, np.float64)

    def template_patch(self, index: int) -> np.ndarray:
        """(S, S, 3) uint8: the inner patch of the person's frame `index` at the model's size."""
        return _model_patch(crop.inner(np.asarray(self.crops[index]), self.crop_cfg),
                            self.cfg.model.image_size)

    def generate(self, patches: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """The generator on (B, S, S, 3) uint8 template patches (`template_patch`) and
        (B, 16, F) audio windows -> (B, 3, S, S) float32 in [0, 1]. Its reference input is the
        still reference, or each patch itself (`infer.reference`); its masked input is the
        patch with the mouth rectangle blacked out."""
        masked = patches.transpose(0, 3, 1, 2).astype(np.float32) / 255
        ref = masked.copy() if self.reference_patch is None else np.broadcast_to(
            self.reference_patch.transpose(2, 0, 1)[None].astype(np.float32) / 255,
            masked.shape)
        # the rectangle the generator was trained to fill: the checkpoint's, not the dataset's
        x0, y0, x1, y1 = crop.mask_rect(self.cfg.crop, self.cfg.model.image_size)
        masked[:, :, y0:y1, x0:x1] = 0
        audio_in = unet.audio_window_to_input(torch.from_numpy(np.asarray(windows, np.float32)),
                                              self.cfg.model.audio_mode).numpy()
        return self.backend(np.concatenate([ref, masked], axis=1), audio_in)

    @functools.cached_property
    def idle_runs(self) -> list[tuple[int, int]]:
        """Runs of the recording where the person is silent; only core mode needs them, so
        the recording's audio is read on first use, not at load."""
        cfg = self.cfg
        hop = cfg.media.sample_rate // cfg.media.fps
        levels = frame_levels_db(self.dataset.wav()[: self.n_frames * hop], hop)
        levels = np.pad(levels, (0, self.n_frames - len(levels)), constant_values=-120.0)
        offset = silence_offset_db(cfg, speech_level_db(levels))
        quiet = levels + offset < cfg.infer.silence_db
        return templates.silent_runs(quiet, max(2, round(cfg.infer.min_silence_s *
                                                         cfg.media.fps)))

    @functools.cached_property
    def reference_patch(self) -> np.ndarray | None:
        """(S, S, 3) uint8 generator reference for `infer.reference="still"` (None: each
        template frame is its own reference)."""
        mode = self.cfg.infer.reference
        if mode not in ("still", "template"):
            raise InferError(f"unknown infer.reference {mode!r}; use 'still' or 'template'")
        if mode == "template":
            return None
        return self.template_patch(still_reference_index(self.dataset, self.cfg))

    def still(self, index: int | None = None) -> np.ndarray:
        """One real frame of the person (the start frame by default), (H, W, 3) uint8 RGB."""
        return self.reader[self.cfg.infer.start_frame if index is None else index]

    def planned_templates(self, n_out: int) -> np.ndarray | None:
        """Templates fixed in advance for an output of known length (loop-back), else None:
        the stream then chooses them frame by frame (bouncing / core mode)."""
        if not self.cfg.infer.loop_back:
            return None
        return templates.loop_back_sequence(n_out, self.n_frames, self.cfg.infer.start_frame)

    def stream(self, template_indices: Iterable[int] | None = None,
               audio: np.ndarray | None = None,
               input_level_db: float | None = None,
               pixel_format: str = "rgb24") -> LipSyncStream:
        """A live session: push audio chunks, get finished frames (see LipSyncStream).

        audio: the (N,) 16 kHz audio that will be pushed, when known in advance. A `hubert`
        avatar needs it (HuBERT features are computed for all of it first, in chunks); a
        `whisper` avatar then computes its windows ahead instead of waiting 4 s for each;
        `ave` uses it only for its speech level (see `silence_offset_db`) and works on audio
        as it arrives. input_level_db: the speech level of the audio to come (`speech_level_db`),
        when known but not the audio; None and no `audio`: the silence threshold stays put.
        pixel_format: "rgb24" frames, or "yuv420p" I420 planes (`render`; needs
        `reader.yuv_ok`).
        """
        return LipSyncStream(self, template_indices, audio, input_level_db, pixel_format)

    def frames(self, wav: np.ndarray, template_indices: Iterable[int] | None = None,
               block: int = 16_000) -> Iterator[np.ndarray]:
        """All frames for (N,) float32 16 kHz audio, streamed."""
        with self.stream(template_indices, wav) as live:
            for i in range(0, len(wav), block):
                yield from live.push(wav[i:i + block])
            yield from live.finish()

    def render(self, audio: str | os.PathLike | np.ndarray, out: str | os.PathLike | None = None,
               template_indices: Iterable[int] | None = None, progress: bool = True,
               allow_silent: bool = False) -> RenderResult:
        """Render one video: 25 fps H.264 with the audio muxed, as long as the audio.

        audio: a file (wav/mp3/m4a/flac/…, any rate and channels) or (N,) float32 16 kHz.
        out: the .mp4 (default outputs/<name>/<audio stem>.mp4); written atomically.
        template_indices: the person's frame for each output frame (default: bouncing, or
        the config's loop-back / core mode).
        """
        t0 = time.perf_counter()
        sr = self.cfg.media.sample_rate
        with contextlib.ExitStack() as stack:
            wav_path = stack.enter_context(_as_wav(audio, sr))
            info = sf.info(str(wav_path))
            n_out = audio_lib.n_video_frames(info.frames, self.cfg.media)
            level = _check_audio(wav_path, info.frames / sr, self.cfg, allow_silent)
            if out is None:
                stem = Path(audio).stem if not isinstance(audio, np.ndarray) else "speech"
                out = self.output_root / self.name / f"{stem}.mp4"
            if template_indices is None:
                template_indices = self.planned_templates(n_out)
            whole = (sf.read(str(wav_path), dtype="float32")[0]
                     if isinstance(self.speech, hubert.HubertFeatures) else None)
            # (whisper streams the file as it is read: its features are never held whole)
            pixels = "yuv420p" if self.cfg.infer.yuv_render and self.reader.yuv_ok else "rgb24"
            live = stack.enter_context(self.stream(template_indices, whole, level, pixels))
            bar = progress_bar(total=n_out, desc=f"render {Path(out).name}", unit="frame",
                               enabled=progress)
            with bar, media.VideoWriter(out, fps=self.cfg.media.fps, crf=self.cfg.infer.crf,
                                        preset=self.cfg.infer.x264_preset, audio=wav_path,
                                        pixel_format=pixels) as writer:
                for block in sf.blocks(str(wav_path), blocksize=sr, dtype="float32"):
                    for frame in live.push(block):  # _as_wav made it mono
                        writer.write(frame)
                        bar.update()
                for frame in live.finish():
                    writer.write(frame)
                    bar.update()
        return RenderResult(Path(out), live.n_written, time.perf_counter() - t0,
                            self.backend.describe(), live.templates, list(live.features.silent),
                            live.features.silence_offset)

    def render_many(self, audios: Iterable[str | os.PathLike] | str | os.PathLike,
                    out_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> list[RenderResult]:
        """One video per audio file (a list, or every audio file in a folder)."""
        if isinstance(audios, (str, os.PathLike)) and Path(audios).is_dir():
            audios = sorted(p for p in Path(audios).iterdir()
                            if p.suffix.lower() in AUDIO_SUFFIXES)
        audios = [Path(a) for a in audios]
        if not audios:
            raise InferError("no audio files to render")
        folder = Path(out_dir) if out_dir else self.output_root / self.name
        return [self.render(a, folder / f"{a.stem}.mp4", progress=progress) for a in audios]


# ---------------------------------------------------------------------- the stream


class LipSyncStream:
    """Push audio as it arrives (16 kHz mono float32, any chunk size), get finished frames.

    Frame t (covering audio t/25 .. (t+1)/25 s) comes out once the audio up to about
    t/25 + 0.5 s has arrived (the generator looks 7 frames ahead and a quiet stretch must last
    `min_silence_s` to count as silence), or at `finish`. The frames equal an offline render of
    the same audio.
    """

    def __init__(self, avatar: Avatar, template_indices: Iterable[int] | None = None,
                 audio: np.ndarray | None = None, input_level_db: float | None = None,
                 pixel_format: str = "rgb24") -> None:
        self.avatar = avatar
        cfg = avatar.cfg
        if input_level_db is None and audio is not None:
            hop = cfg.media.sample_rate // cfg.media.fps
            input_level_db = speech_level_db(frame_levels_db(np.asarray(audio), hop))
        offset = silence_offset_db(cfg, input_level_db)
        if offset:
            log.info("audio speech level %.1f dBFS: silence below %.1f dBFS", input_level_db,
                     cfg.infer.silence_db - offset)
        if avatar.speech is None:
            self.features = FeatureStream(avatar.encode, cfg, silence=avatar.pause_window,
                                          silence_offset=offset)
        elif isinstance(avatar.speech, whisper_lib.WhisperFeatures):  # streams by windows
            self.features = FeatureStream(None, cfg, silence=avatar.pause_window,
                                          silence_offset=offset,
                                          source=avatar.speech.stream(audio))
        elif audio is None:
            raise InferError("hubert streaming of audio that is still arriving is not "
                             "supported (HuBERT needs the whole audio); use render() or "
                             "frames(), or pass the audio: avatar.stream(audio=wav)")
        else:
            self.features = FeatureStream(None, cfg, avatar.speech(np.asarray(audio, np.float32)),
                                          avatar.pause_window, offset)
        self._given = iter(template_indices) if template_indices is not None else None
        core = cfg.infer.mode == "core"
        if cfg.infer.mode not in ("bounce", "core"):
            raise InferError(f"unknown infer.mode {cfg.infer.mode!r}; use 'bounce' or 'core'")
        if core and not avatar.idle_runs:
            log.warning("core mode: the recording has no silent stretch to play; bouncing")
        self.plan = templates.TemplatePlan(avatar.n_frames, cfg.infer.start_frame,
                                           avatar.idle_runs if core else None, avatar.centres)
        self.core = core
        self.templates: list[int] = []  # template index of each frame produced
        self.n_written = 0
        self.pixel_format = pixel_format  # of the frames out: rgb24, or yuv420p I420 planes
        self._cursor = avatar.reader.cursor(pixel_format)  # this stream's own decoder
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="templates")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the template-decoding thread and its ffmpeg (also when the stream is
        collected); waits for at most the one batch being decoded."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._cursor.close()

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        self.features.push(samples)
        return self._produce()

    def finish(self) -> list[np.ndarray]:
        self.features.finish()
        return self._produce()

    def _template(self, t: int) -> int:
        if self._given is not None:
            try:
                return int(next(self._given))
            except StopIteration:
                raise InferError(f"template_indices ran out at frame {t}") from None
        return self.plan.next(self.features.silent[t])

    def _produce(self) -> list[np.ndarray]:
        ready = self.features.n_ready()
        batch = self.avatar.cfg.infer.batch_size
        out: list[np.ndarray] = []
        while self.n_written < ready:
            stop = min(ready, self.n_written + batch)
            out.extend(self._frames(range(self.n_written, stop)))
            self.n_written = stop
        self.features.release(self.n_written)
        return out

    def _frames(self, frames: range) -> list[np.ndarray]:
        av = self.avatar
        idx = [self._template(t) for t in frames]
        self.templates.extend(idx)
        # decode the template frames while the generator runs (both release the GIL)
        decoded = self._pool.submit(lambda: [self._cursor[i] for i in idx])
        generate = [k for k, t in enumerate(frames)
                    if not (self.core and self.features.silent[t] and av.idle_runs)]
        patches: dict[int, np.ndarray] = {}
        if generate:
            y = av.generate(np.stack([av.template_patch(idx[k]) for k in generate]),
                            np.stack([self.features.window(frames[k]) for k in generate]))
            y = np.clip(np.rint(y.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
            patches = dict(zip(generate, y, strict=True))
        paste = av.compositor.paste_yuv if self.pixel_format == "yuv420p" else av.compositor
        result = []
        for k, (template, frame) in enumerate(zip(idx, decoded.result(), strict=True)):
            if k in patches:
                frame = paste(frame, np.asarray(av.crops[template]), av.boxes[template],
                              patches[k], av.paste_masks[template])
            result.append(frame)
        return result


def _model_patch(inner_patch: np.ndarray, size: int) -> np.ndarray:
    """An inner crop patch at the generator's input size."""
    if inner_patch.shape[0] == size:
        return inner_patch
    return cv2.resize(inner_patch, (size, size), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------- audio input


@contextlib.contextmanager
def _as_wav(audio: str | os.PathLike | np.ndarray, sample_rate: int) -> Iterator[Path]:
    """Any audio (file of any format/rate/channels, or an array) as a temp 16 kHz mono wav."""
    tmp = files.owned_temp("synctalk-audio-", ".wav")  # a killed run's is removed later
    try:
        if isinstance(audio, np.ndarray):
            if audio.ndim != 1:
                raise InferError(f"audio arrays must be mono (N,), got shape {audio.shape}")
            sf.write(tmp, np.clip(audio.astype(np.float32), -1, 1), sample_rate,
                     subtype="FLOAT")
        else:
            path = Path(audio)
            if not path.is_file():
                raise InferError(f"audio file {path} does not exist")
            try:
                info = media.probe(path)
            except media.MediaError as exc:
                raise InferError(f"cannot read {path} as audio: {exc}") from exc
            if not info.has_audio:
                raise InferError(f"{path} has no audio track")
            try:
                media.run_ffmpeg(["-y", "-i", str(path), *media.mono_audio_args(sample_rate),
                                  "-c:a", "pcm_f32le", str(tmp)])
            except media.MediaError as exc:
                raise InferError(f"cannot decode the audio of {path}: {exc}") from exc
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def check_speech(wav: np.ndarray, cfg: Config) -> None:
    """Refuse audio that is too short to animate or silent throughout (InferError says why)."""
    _check_length(len(wav) / cfg.media.sample_rate)
    if not _has_sound(wav, cfg):
        raise _silent_error(cfg)


def _check_length(seconds: float) -> None:
    if seconds < MIN_AUDIO_S:
        raise InferError(f"the audio is {seconds:.2f} s long; give at least {MIN_AUDIO_S} s")


def _silent_error(cfg: Config) -> InferError:
    return InferError(f"the audio is silent (no 40 ms frame above {cfg.infer.silence_db} "
                      "dBFS); give speech, or lower infer.silence_db for quiet recordings")


def _has_sound(wav: np.ndarray, cfg: Config) -> bool:
    hop = cfg.media.sample_rate // cfg.media.fps
    return bool(np.any(frame_levels_db(wav, hop) >= cfg.infer.silence_db))


def _check_audio(wav_path: Path, seconds: float, cfg: Config, allow_silent: bool) -> float:
    """`check_speech` for a mono wav file, read in blocks (long audio is never loaded whole);
    returns its speech level (dBFS)."""
    _check_length(seconds)
    hop = cfg.media.sample_rate // cfg.media.fps
    levels = np.concatenate([frame_levels_db(block, hop) for block in
                             sf.blocks(str(wav_path), blocksize=hop * 250, dtype="float32")])
    if not allow_silent and not np.any(levels >= cfg.infer.silence_db):
        raise _silent_error(cfg)
    return speech_level_db(levels)


def speak(text: str, voice: str = "en-us", wpm: int = 160, sample_rate: int = 16_000
          ) -> np.ndarray:
    """Offline speech for `text` (espeak-ng), (N,) float32 at sample_rate."""
    from . import tts

    return tts.synthesize(text, voice=voice, wpm=wpm, sample_rate=sample_rate).audio
