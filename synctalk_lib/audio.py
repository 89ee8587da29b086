"""Audio features: the mel spectrogram of Wav2Lip / SyncTalk_2D and its per-frame windows.

Mel frames come at sample_rate / hop_length = 80 per second, so one 25 fps video frame spans
3.2 mel frames. A frame's window is `mel_window` (16) mel frames = 0.2 s starting at the
frame's own time, the convention of the lip-sync experts whose audio encoders we may load
(Wav2Lip, SyncTalk_2D's `audio_visual_encoder.pth`); windows past the end are clamped.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import scipy.signal

from .config import AudioConfig, MediaConfig


@functools.lru_cache(maxsize=4)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def melspectrogram(wav: np.ndarray, cfg: AudioConfig, sample_rate: int = 16_000) -> np.ndarray:
    """Normalised log-mel spectrogram.

    wav: (S,) float32 mono in [-1, 1] at `sample_rate` (16 kHz for the constants of cfg).
    Returns (T_mel, n_mels) float32 in [-max_abs_value, max_abs_value]; T_mel = 1 + S // hop.
    """
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio (S,), got shape {wav.shape}; load it with "
                         "media.load_audio which mixes down to mono")
    emphasised = scipy.signal.lfilter([1.0, -cfg.preemphasis], [1.0], wav)
    spec = np.abs(librosa.stft(
        y=emphasised, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
    ))
    return _normalised_mel(spec, cfg, sample_rate)


def _normalised_mel(spec: np.ndarray, cfg: AudioConfig, sample_rate: int) -> np.ndarray:
    """(1 + n_fft/2, T) magnitudes -> (T, n_mels) normalised log-mel."""
    mel = _mel_basis(sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ spec
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - cfg.ref_level_db
    # symmetric normalisation of [min_level_db, 0] dB to [-max_abs, max_abs], clipped
    scaled = (2 * cfg.max_abs_value) * ((db - cfg.min_level_db) / -cfg.min_level_db)
    scaled -= cfg.max_abs_value
    return np.clip(scaled, -cfg.max_abs_value, cfg.max_abs_value).T.astype(np.float32)


class MelStream:
    """`melspectrogram` computed chunk by chunk as audio arrives, for live inference.

    Each mel frame depends only on n_fft samples around it (librosa pads the ends with zeros
    and the pre-emphasis filter carries one sample of state), so pushing audio in any chunks
    and then calling `finish` gives the same frames as one call on the whole signal.
    """

    def __init__(self, cfg: AudioConfig, sample_rate: int = 16_000) -> None:
        self.cfg, self.sample_rate = cfg, sample_rate
        self._zi = np.zeros(1)
        half = cfg.n_fft // 2
        self._buf = np.zeros(half, np.float64)  # the zero padding before sample 0
        self._buf_start = -half  # absolute sample index of _buf[0]
        self.n_samples = 0
        self.n_done = 0  # mel frames produced so far

    def push(self, wav: np.ndarray) -> np.ndarray:
        """Add samples; return the mel frames (K, n_mels) that are now complete."""
        wav = np.asarray(wav, np.float64).reshape(-1)
        emphasised, self._zi = scipy.signal.lfilter([1.0, -self.cfg.preemphasis], [1.0], wav,
                                                    zi=self._zi)
        self._buf = np.concatenate([self._buf, emphasised])
        self.n_samples += len(wav)
        half = self.cfg.n_fft // 2
        ready = (self.n_samples - half) // self.cfg.hop_length + 1 if self.n_samples >= half else 0
        return self._frames(ready)

    def finish(self) -> np.ndarray:
        """The remaining frames, computed with the end padded by zeros as librosa does."""
        total = 1 + self.n_samples // self.cfg.hop_length
        self._buf = np.concatenate([self._buf, np.zeros(self.cfg.n_fft, np.float64)])
        return self._frames(total)

    def _frames(self, upto: int) -> np.ndarray:
        cfg = self.cfg
        if upto <= self.n_done:
            return np.zeros((0, cfg.n_mels), np.float32)
        first = self.n_done * cfg.hop_length - cfg.n_fft // 2 - self._buf_start
        last = (upto - 1) * cfg.hop_length + cfg.n_fft - cfg.n_fft // 2 - self._buf_start
        spec = np.abs(librosa.stft(
            y=self._buf[first:last], n_fft=cfg.n_fft, hop_length=cfg.hop_length,
            win_length=cfg.win_length, center=False,
        ))
        self.n_done = upto
        keep = self.n_done * cfg.hop_length - cfg.n_fft // 2 - self._buf_start
        self._buf = self._buf[keep:]
        self._buf_start += keep
        return _normalised_mel(spec, cfg, self.sample_rate)


def mel_frames_per_video_frame(cfg: AudioConfig, media: MediaConfig) -> float:
    return media.sample_rate / cfg.hop_length / media.fps


def mel_window_start(frame: int | np.ndarray, cfg: AudioConfig, media: MediaConfig):
    """First mel frame of a video frame's window (int(80 * t), as Wav2Lip does)."""
    return (np.asarray(frame) * mel_frames_per_video_frame(cfg, media)).astype(np.int64)


def frame_mel_windows(
    mel: np.ndarray, n_frames: int, cfg: AudioConfig, media: MediaConfig
) -> np.ndarray:
    """One mel window per video frame.

    mel: (T_mel, n_mels) from `melspectrogram`. Returns (n_frames, n_mels, mel_window)
    float32; windows that would run past the end are moved back to end with the audio, and
    audio shorter than one window is padded with the quietest value.
    """
    win = cfg.mel_window
    if mel.shape[0] < win:
        pad = np.full((win - mel.shape[0], mel.shape[1]), -cfg.max_abs_value, np.float32)
        mel = np.concatenate([mel, pad])
    starts = np.minimum(mel_window_start(np.arange(n_frames), cfg, media), mel.shape[0] - win)
    idx = starts[:, None] + np.arange(win)[None, :]  # (n_frames, win)
    return np.ascontiguousarray(mel[idx].transpose(0, 2, 1))


def n_video_frames(n_samples: int, media: MediaConfig) -> int:
    """Video frames that cover `n_samples` of audio (rounded: output length = audio length)."""
    return round(n_samples * media.fps / media.sample_rate)


def frame_rms_db(wav: np.ndarray, media: MediaConfig) -> np.ndarray:
    """Loudness per video frame in dB relative to the loudest frame; (n_frames,) float32."""
    hop = media.sample_rate // media.fps
    n = n_video_frames(len(wav), media)
    padded = np.zeros(n * hop, np.float32)
    padded[: min(len(wav), n * hop)] = wav[: n * hop]
    rms = np.sqrt(np.mean(padded.reshape(n, hop) ** 2, axis=1) + 1e-12)
    return (20 * np.log10(rms / max(rms.max(), 1e-9))).astype(np.float32)
