"""Audio-video offset of a recording, measured from the recording itself before any training.

A recording whose sound is late against the picture by more than the audio window teaches
the generator a mouth that lags the voice, and no setting repairs that afterwards. Any voice
makes the lips part as it gets loud, so the offset is found without a model: the per-frame
change of the landmarks' mouth opening is cross-correlated with the per-frame change of the
speech band's loudness, and the lag of the peak is the offset. Changes, not levels: the slow
rise and fall of a phrase correlates over many lags and blurs the peak; syllable onsets
are sharp.

Sign convention (as `syncnet.sync_offset` and `evaluate`): offset k > 0 means the sound is
late, the audio that belongs to the mouth of frame t is heard at frame t + k. Correcting it
advances the audio by k frames (`shift_audio(wav, -k)`).

Confidence is how far the peak stands above the correlations at far lags (≥ 2 × max_lag,
where mouth and sound are unrelated): (peak - mean) / std of those, a z-score for this very
recording. One clip's mouth against another clip's sound gave at most 3.4 over 10-20 s
(the threshold, check.sync_min_confidence, is 3.5); the shared speakers over 20-60 s give
3.9-8.9 (docs/recording_check.md). Clips under ~10 s rarely reach it: their offset is
reported as unclear and never corrected by "auto".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.signal

from .config import CheckConfig, MediaConfig

SPEECH_BAND_HZ = (300.0, 3000.0)  # voice formants; hum, rumble and hiss stay out
_FLOOR_PERCENTILE = 5.0  # loudness is measured above the recording's own quiet floor
_FAR_LAGS = 150  # frames: correlations out to here (past 2 × max_lag) are the null


@dataclass(frozen=True)
class OffsetEstimate:
    """The cross-correlation of one stretch of the recording.

    offset: int frames at the peak (> 0: sound late); fine: sub-frame peak from a parabola
    through the peak and its neighbours; confidence: z-score of the peak against far lags
    (NaN when the stretch is too short); peak: correlation at the peak in [-1, 1];
    lags (L,) int and corr (L,) float32: the curve.
    """

    offset: int
    fine: float
    confidence: float
    peak: float
    lags: np.ndarray
    corr: np.ndarray
    start_s: float = 0.0
    stop_s: float = 0.0

    def clear(self, cfg: CheckConfig) -> bool:
        return math.isfinite(self.confidence) and self.confidence >= cfg.sync_min_confidence

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "fine": _round(self.fine),
                "confidence": _round(self.confidence), "peak": _round(self.peak),
                "start_s": round(self.start_s, 2), "stop_s": round(self.stop_s, 2)}


@dataclass(frozen=True)
class OffsetReport:
    """The offset over the whole clip, its two halves and sliding windows.

    drift: change of the offset over the clip in frames, from a line through the clear
    windows (NaN with fewer than 3 of them); a steady offset has |drift| < 2.
    """

    whole: OffsetEstimate
    halves: tuple[OffsetEstimate, ...] = ()
    windows: tuple[OffsetEstimate, ...] = ()
    drift: float = float("nan")
    fps: float = 25.0

    def to_dict(self) -> dict[str, Any]:
        return {"whole": self.whole.to_dict(), "halves": [h.to_dict() for h in self.halves],
                "windows": [w.to_dict() for w in self.windows], "drift": _round(self.drift),
                "lags": self.whole.lags.tolist(),
                "corr": [_round(float(c)) for c in self.whole.corr]}


# ---------------------------------------------------------------- the signals

def mouth_signal(opening: np.ndarray, found: np.ndarray | None = None) -> np.ndarray:
    """(T,) change of the mouth opening per frame; 0 where the face was not detected.

    opening: (T,) float inner-lip gap / face width (`landmarks.mouth_opening`).
    """
    opening = np.nan_to_num(np.asarray(opening, np.float64))
    change = np.diff(opening, prepend=opening[:1])
    if found is not None:  # interpolated frames move smoothly and carry no onsets
        ok = np.asarray(found, bool)
        change[~(ok & np.roll(ok, 1))] = 0.0
    return change


def speech_signal(wav: np.ndarray, media: MediaConfig) -> np.ndarray:
    """(A,) change of the speech band's loudness per video frame, in dB above the floor.

    wav: (S,) float32 mono at media.sample_rate; A = S // (sample_rate / fps).
    """
    hop = media.sample_rate // media.fps
    n = len(wav) // hop
    if n < 2:
        return np.zeros(max(n, 0))
    nyquist = media.sample_rate / 2
    band = (SPEECH_BAND_HZ[0], min(SPEECH_BAND_HZ[1], 0.9 * nyquist))
    sos = scipy.signal.butter(4, band, btype="bandpass", fs=media.sample_rate, output="sos")
    voice = scipy.signal.sosfilt(sos, np.asarray(wav[: n * hop], np.float64))
    rms = np.sqrt(np.mean(voice.reshape(n, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    level = np.maximum(db, np.percentile(db, _FLOOR_PERCENTILE))
    return np.diff(level, prepend=level[:1])


# ---------------------------------------------------------------- the estimate

def correlate(mouth: np.ndarray, speech: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(len(lags),) Pearson correlation of mouth[t] with speech[t + lag] over the overlap."""
    n = min(len(mouth), len(speech))
    mouth, speech = mouth[:n], speech[:n]
    out = np.full(len(lags), np.nan)
    for i, k in enumerate(lags):
        a = mouth[max(0, -k): n - max(0, k)]
        b = speech[max(0, k): n - max(0, -k)]
        if len(a) < 3:
            continue
        a, b = a - a.mean(), b - b.mean()
        denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
        out[i] = float((a * b).sum()) / denom if denom > 0 else 0.0
    return out


def estimate(mouth: np.ndarray, speech: np.ndarray, max_lag: int, fps: float = 25.0,
             start: int = 0, min_frames: int = 200) -> OffsetEstimate:
    """The offset of one stretch: the peak of `correlate` over lags -max_lag..max_lag.

    mouth, speech: (T,) from `mouth_signal` / `speech_signal`, same frame grid. Stretches
    shorter than min_frames get confidence NaN (unclear): too few far lags for a null.
    """
    n = min(len(mouth), len(speech))
    lags = np.arange(-max_lag, max_lag + 1)
    corr = correlate(mouth, speech, lags)
    if n < min_frames or not np.isfinite(corr).any():
        return OffsetEstimate(0, float("nan"), float("nan"), float("nan"), lags,
                              corr.astype(np.float32), start / fps, (start + n) / fps)
    best = int(np.nanargmax(corr))
    fine = float(lags[best])
    if 0 < best < len(lags) - 1:  # parabola through the peak and its neighbours
        y0, y1, y2 = corr[best - 1], corr[best], corr[best + 1]
        bend = y0 - 2 * y1 + y2
        if bend < 0:
            fine += float(np.clip(0.5 * (y0 - y2) / bend, -0.5, 0.5))
    far_max = min(n // 3, _FAR_LAGS)
    far = np.r_[-far_max:-2 * max_lag, 2 * max_lag + 1:far_max + 1]
    null = correlate(mouth, speech, far) if len(far) >= 10 else np.zeros(0)
    null = null[np.isfinite(null)]
    conf = (float((corr[best] - null.mean()) / null.std())
            if len(null) >= 10 and null.std() > 0 else float("nan"))
    return OffsetEstimate(int(lags[best]), fine, conf, float(corr[best]), lags,
                          corr.astype(np.float32), start / fps, (start + n) / fps)


def measure_offset(opening: np.ndarray, wav: np.ndarray, cfg_check: CheckConfig,
                   media: MediaConfig, found: np.ndarray | None = None) -> OffsetReport:
    """The offset over the whole clip, its halves and windows of cfg_check.sync_window_s.

    opening: (T,) mouth opening per video frame; wav: (S,) float32 mono at media.sample_rate.
    """
    fps = float(media.fps)
    mouth = mouth_signal(opening, found)
    speech = speech_signal(wav, media)
    n = min(len(mouth), len(speech))
    mouth, speech = mouth[:n], speech[:n]
    lag, least = cfg_check.sync_max_lag, round(cfg_check.sync_min_s * fps)
    whole = estimate(mouth, speech, lag, fps, 0, least)
    half = n // 2
    halves = tuple(estimate(mouth[a:b], speech[a:b], lag, fps, a, least)
                   for a, b in ((0, half), (half, n))) if half >= least else ()
    width = round(cfg_check.sync_window_s * fps)
    windows = tuple(estimate(mouth[a:a + width], speech[a:a + width], lag, fps, a, least)
                    for a in range(0, n - width + 1, max(width // 2, 1))) if n >= 2 * width else ()
    clear = [w for w in windows if w.clear(cfg_check)]
    drift = float("nan")
    if len(clear) >= 3:
        t = np.array([(w.start_s + w.stop_s) / 2 for w in clear])
        slope = np.polyfit(t, [w.fine for w in clear], 1)[0]
        drift = float(slope * (t[-1] - t[0]))
    return OffsetReport(whole, halves, windows, drift, fps)


def correction(report: OffsetReport, setting: str, cfg_check: CheckConfig) -> int:
    """Frames to advance the audio by (the measured offset, or the setting), or 0.

    setting: "auto" corrects only a clear, steady offset of at least
    cfg_check.sync_min_correction frames (±1 on an in-sync clip is noise); "0" never
    shifts; an integer ("-3", "6") is applied as it is, in the same sign as the offset.
    """
    fixed = parse_setting(setting)
    if fixed is not None:
        return fixed
    whole = report.whole
    steady = not (math.isfinite(report.drift) and abs(report.drift) >= cfg_check.sync_min_correction)
    if whole.clear(cfg_check) and steady and abs(whole.offset) >= cfg_check.sync_min_correction:
        return whole.offset
    return 0


def parse_setting(setting: str) -> int | None:
    """None for "auto", else the integer number of frames; anything else raises."""
    text = str(setting).strip().lower()
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"media.av_offset must be 'auto' or a whole number of frames "
                         f"(> 0: the sound is late), got {setting!r}; e.g. --set "
                         "media.av_offset=auto, =0 or =-3") from None


def shift_audio(wav: np.ndarray, frames: int, media: MediaConfig) -> np.ndarray:
    """Move the sound `frames` video frames later (negative: earlier), keeping its length.

    To correct a sound that is k frames late, call shift_audio(wav, -k). The gap opened at
    one end is filled with the recording's quietest frame repeated (its room tone), so the
    silence and noise measures do not see digital silence that was never recorded.
    """
    wav = np.asarray(wav, np.float32)
    hop = media.sample_rate // media.fps
    k = abs(frames) * hop
    if frames == 0 or len(wav) == 0:
        return wav.copy()
    k = min(k, len(wav))
    fill = _room_tone(wav, hop, k)
    if frames > 0:
        return np.concatenate([fill, wav[: len(wav) - k]])
    return np.concatenate([wav[k:], fill])


def _room_tone(wav: np.ndarray, hop: int, n: int) -> np.ndarray:
    m = len(wav) // hop
    if m == 0:
        return np.zeros(n, np.float32)
    frames = wav[: m * hop].reshape(m, hop)
    quiet = frames[int(np.argmin(np.mean(frames ** 2, axis=1)))]
    return np.resize(quiet, n).astype(np.float32)


def _round(x: float, digits: int = 3) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


__all__ = ["OffsetEstimate", "OffsetReport", "correction", "correlate", "estimate",
           "measure_offset", "mouth_signal", "parse_setting", "shift_audio", "speech_signal"]
