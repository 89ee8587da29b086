"""The recording check: is a talking-head video good training material, and if not, why?

Users of this field get bad models from bad recordings far more often than from bad
settings: too short, the head moving, no silence to learn a closed mouth from, a second
voice, a tiny face. This module measures each of these from arrays that preprocessing has
already produced (no decoding here, so the check is instant and testable) and says in plain
words what is wrong and how to record again. The guidance follows docs/design.md §1: about
5 minutes, face toward the camera, little head motion, one speaker, ~5 s of silence at start
and end, clean audio.

Every measure is a heuristic with thresholds in `CheckConfig`; a "warn" means "likely to
hurt the result", a "fail" means "this recording cannot work".

Typical use (notebook or CLI):

    report = check_recording(info=info, wav=wav, points=points, found=found,
                             scheme=scheme, boxes=boxes, cfg=cfg)
    print(report)              # aligned table: status, item, value, advice
    plot_check(report, "outputs/me/check.png")
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .audio import frame_rms_db
from .av_offset import OffsetReport, measure_offset
from .config import Config
from .landmarks import Scheme, face_width, mouth_opening

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .media import MediaInfo

log = logging.getLogger(__name__)

Status = Literal["pass", "warn", "fail"]
_ORDER: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}

# Rates cameras record at; anything else is usually a phone's variable frame rate averaged.
_STANDARD_FPS = (23.976, 24.0, 25.0, 29.97, 30.0, 47.952, 48.0, 50.0, 59.94, 60.0,
                 90.0, 100.0, 119.88, 120.0, 240.0)
_FPS_TOLERANCE = 0.02  # container rounding (30000/1001 = 29.97003)
_BLIP_S = 0.2  # clicks and breaths shorter than this do not end a stretch of silence
_WORD_GAP_S = 0.3  # pauses between words shorter than this do not end a stretch of speech
_FLOOR_PERCENTILE = 5.0  # quietest frames = room noise (silences and gaps between words)
_SPEECH_PERCENTILE = 95.0  # loudest frames = speech level
_MOTION_RANGE = (5.0, 95.0)  # percentiles for "range": ignores a few outlier frames
_PLOT_DB_FLOOR = -80.0  # digital silence is ~-120 dB; clip so the speech range stays readable
_PLOT_BINS = 900  # longer curves are drawn as min-max bands per bin (≈ the figure's pixels)
_PLOT_WRAP = 115  # advice characters per line in the figure's table
_ROW_GAP = 0.35  # extra space between table rows, in lines
_MINUTES_AFTER_S = 120  # longer recordings get a min:s time axis

# item names, in report order (stable: tests, notebooks and `report[name]` use them)
DURATION = "duration"
FRAME_RATE = "frame rate"
FACE_SIZE = "face size"
FACE_FOUND = "face found"
HEAD_MOTION = "head motion"
MOUTH_MOTION = "mouth motion"
SILENCE = "silence"
NOISE = "noise"
SECOND_VOICE = "second voice"
AV_OFFSET = "audio offset"


@dataclass(frozen=True)
class CheckItem:
    """One line of the report.

    value: the measurement in human words ("4 min 58 s"); advice: empty when it passes,
    otherwise what is wrong, why it matters and how to record instead.
    """

    name: str
    value: str
    status: Status
    advice: str = ""


@dataclass
class CheckReport:
    """All items plus the per-frame curves they were computed from (for `plot_check`).

    series (each at `fps` frames per second; audio curves have the audio's own length):
      loudness_db (A,) float32 dB re the loudest frame; silent (A,) bool; speech (A,) bool;
      mouth_opening (T,) float32 inner-lip gap / face width (NaN if the scheme has no lips);
      voiced_closed (T,) bool, loud audio while the mouth stays closed ≥ min_closed_voiced_s;
      head_x, head_y (T,) float32 nose offset from its median, in face widths;
      face_scale (T,) float32 crop-box side / its median - 1; face_found (T,) bool.
    """

    items: list[CheckItem]
    series: dict[str, np.ndarray] = field(default_factory=dict)
    fps: float = 25.0
    source: str = ""
    silence_threshold_db: float = -40.0  # effective threshold (adapted to the noise floor)
    speech_threshold_db: float = -30.0
    closed_threshold: float = float("nan")  # mouth opening below this counts as closed
    max_head_motion: float = 0.25
    has_sound: bool = True  # False: the audio curves are meaningless (all relative to silence)
    offset: OffsetReport | None = None  # mouth against sound (av_offset.py); None without lips
    applied_offset: int = 0  # frames preprocessing already shifted the sound by

    @property
    def passed(self) -> bool:
        """No item failed (warnings allowed: they hurt quality but training still works)."""
        return all(item.status != "fail" for item in self.items)

    @property
    def status(self) -> Status:
        """The worst status of all items."""
        return max((item.status for item in self.items), key=_ORDER.__getitem__, default="pass")

    def __getitem__(self, name: str) -> CheckItem:
        for item in self.items:
            if item.name == name:
                return item
        raise KeyError(f"no check item {name!r}; items: {[i.name for i in self.items]}")

    def summary(self) -> str:
        """One line: 'PASS', or counts of warnings and failures."""
        n_warn = sum(i.status == "warn" for i in self.items)
        n_fail = sum(i.status == "fail" for i in self.items)
        if not n_warn and not n_fail:
            return "PASS: the recording looks good"
        parts = [f"{n} {word}{'s' if n > 1 else ''}"
                 for n, word in ((n_fail, "failure"), (n_warn, "warning")) if n]
        return ("FAIL" if n_fail else "WARN") + ": " + ", ".join(parts)

    def to_dict(self, series: bool = True) -> dict[str, Any]:
        """JSON-able: items, verdict and (optionally) the curves as lists (NaN -> None)."""
        out: dict[str, Any] = {
            "source": self.source,
            "passed": self.passed,
            "status": self.status,
            "fps": float(self.fps),
            "silence_threshold_db": _json_float(self.silence_threshold_db),
            "speech_threshold_db": _json_float(self.speech_threshold_db),
            "closed_threshold": _json_float(self.closed_threshold),
            "has_sound": self.has_sound,
            "items": [asdict(item) for item in self.items],
            "av_offset": None if self.offset is None else {
                **self.offset.to_dict(), "applied": self.applied_offset},
        }
        if series:
            out["series"] = {k: _json_list(v) for k, v in self.series.items()}
        return out

    def to_text(self, width: int = 100) -> str:
        """Aligned table (status, item, value, advice), advice wrapped to `width` columns."""
        name_w = max(len(i.name) for i in self.items) if self.items else 4
        value_w = max(len(i.value) for i in self.items) if self.items else 5
        indent = 6 + name_w + 2 + value_w + 2
        advice_w = max(width - indent, 30)
        lines = [(f"Recording check{f' of {self.source}' if self.source else ''}: "
                 f"{self.summary()}"),
                 f"{'':6}{'item':<{name_w}}  {'value':<{value_w}}  advice"]
        for item in self.items:
            advice = textwrap.wrap(item.advice, advice_w, break_on_hyphens=False) or [""]
            head = f"{item.status.upper():<6}{item.name:<{name_w}}  {item.value:<{value_w}}  "
            lines.append((head + advice[0]).rstrip())
            lines += [" " * indent + rest for rest in advice[1:]]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


# ---------------------------------------------------------------- the check

def check_recording(
    *,
    info: MediaInfo,
    wav: np.ndarray,
    points: np.ndarray,
    found: np.ndarray,
    scheme: Scheme,
    boxes: np.ndarray,
    cfg: Config,
    applied_offset: int = 0,
) -> CheckReport:
    """Measure a recording against the field's recording guidance.

    Args:
        info: `media.MediaInfo` of the source video (its own fps, size, duration).
        wav: (S,) float32 mono in [-1, 1] at cfg.media.sample_rate (16 kHz).
        points: (T, N, 2) float32 landmark pixel coords per frame at cfg.media.fps (25),
            frames without a face already filled by interpolation; N = scheme.n_points.
        found: (T,) bool, a face was detected in that frame (not interpolated).
        scheme: the landmark layout of `points`.
        boxes: (T, 4) float32 smoothed square crop boxes (x0, y0, x1, y1) in source pixels.
        cfg: the workbench config; thresholds come from cfg.check.
        applied_offset: frames the sound in `wav` was already shifted by (preprocessing's
            media.av_offset correction, > 0 = the sound was late); the offset item then
            reports what is left.

    Returns:
        A `CheckReport`; `report.passed` is False if any item failed.
    """
    points = np.asarray(points, np.float32)
    found = np.asarray(found, bool)
    boxes = np.asarray(boxes, np.float32)
    wav = np.asarray(wav, np.float32)
    _check_shapes(wav, points, found, boxes, scheme)
    cc, fps = cfg.check, float(cfg.media.fps)
    n_frames = len(points)

    # ---- video-side curves (T,); statistics use detected frames only
    any_face = bool(found.any())
    # single missed detections are interpolated well; long gaps hold a frozen (closed) mouth
    face_ok = _drop_short_runs(found, _frames(_WORD_GAP_S, fps), False)
    side = boxes[:, 2] - boxes[:, 0]  # (T,) px
    unit = _median(face_width(points[found], scheme))  # face width in px
    if not unit > 0:
        unit = _median(side[found])
    if scheme.nose is not None:
        anchor = points[:, scheme.nose, :]  # (T, 2) nose tip
    else:
        anchor = (boxes[:, :2] + boxes[:, 2:]) / 2  # (T, 2) box centre
    centre = np.median(anchor[found], axis=0) if any_face else np.zeros(2)  # (2,)
    head = ((anchor - centre) / unit).astype(np.float32)  # (T, 2) face widths
    scale = (side / _median(side[found]) - 1).astype(np.float32)  # (T,) NaN without a face
    opening = mouth_opening(points, scheme)  # (T,)

    # ---- audio-side curves (A,)
    audio = _audio_levels(wav, cfg)
    if len(wav) and abs(len(audio.db) - n_frames) > fps:
        log.warning("audio covers %d frames but the video has %d; the mouth-vs-sound check uses "
                    "the shorter", len(audio.db), n_frames)

    # ---- the mouth against the sound: offset, and whether the mouth follows the speech
    offset = None
    if scheme.has_mouth and any_face and audio.audible:
        offset = measure_offset(opening, wav, cc, cfg.media, found)

    # ---- mouth closed while loud: a voice that is not this mouth. "Closed" is relative to
    # the speaker's own range: a small mouth barely parts, and a fixed margin called most of
    # its speech closed
    closed_thr = float("nan")
    voiced_closed = np.zeros(n_frames, bool)
    if scheme.has_mouth and any_face and audio.audible:
        rest, wide = np.percentile(opening[found], _MOTION_RANGE)
        margin = max(cc.closed_range_share * (wide - rest), cc.closed_mouth_min)
        closed_thr = float(rest + min(cc.closed_mouth, margin))
        n = min(n_frames, len(audio.db))
        closed = np.zeros(n_frames, bool)
        closed[:n] = (opening[:n] < closed_thr) & audio.speech[:n] & face_ok[:n]
        voiced_closed = _drop_short_runs(closed, _frames(cc.min_closed_voiced_s, fps), True)

    items = [
        _duration_item(info, n_frames, len(wav) / cfg.media.sample_rate, cfg),
        _frame_rate_item(info, cfg),
        _face_size_item(info, boxes, found, cfg),
        _face_found_item(found, fps, cfg),
        _head_motion_item(head, scale, found, cfg),
        _mouth_item(opening, found, scheme, offset, cfg),
        _silence_item(info, audio, fps, cfg),
        _noise_item(audio, cfg),
        _second_voice_item(voiced_closed, audio, face_ok, scheme, cfg),
        _offset_item(offset, applied_offset, fps, cfg),
    ]
    for item in items:
        if item.status != "pass":
            log.info("recording check %s: %s (%s)", item.status, item.name, item.value)
    series = {
        "loudness_db": audio.db,
        "silent": audio.silent,
        "speech": audio.speech,
        "mouth_opening": opening.astype(np.float32),
        "voiced_closed": voiced_closed,
        "head_x": head[:, 0],
        "head_y": head[:, 1],
        "face_scale": scale,
        "face_found": found,
    }
    return CheckReport(
        items=items, series=series, fps=fps, source=Path(str(info.path)).name,
        silence_threshold_db=audio.silence_thr, speech_threshold_db=audio.speech_thr,
        closed_threshold=closed_thr, max_head_motion=cc.max_head_motion,
        has_sound=audio.audible, offset=offset, applied_offset=applied_offset,
    )


def _check_shapes(wav: np.ndarray, points: np.ndarray, found: np.ndarray, boxes: np.ndarray,
                  scheme: Scheme) -> None:
    """Mismatched inputs come from mixing two preprocessing runs; say which array is off."""
    if wav.ndim != 1:
        raise ValueError(f"wav must be mono (S,), got shape {wav.shape}; "
                         "load it with media.load_audio, which mixes down to mono")
    if points.ndim != 3 or points.shape[1:] != (scheme.n_points, 2):
        raise ValueError(f"points must be (T, {scheme.n_points}, 2) for scheme {scheme.name}, "
                         f"got {points.shape}")
    t = len(points)
    if t == 0:
        raise ValueError("no video frames to check; the video is empty or was not decoded")
    if found.shape != (t,):
        raise ValueError(f"found must be ({t},) like points, got {found.shape}")
    if boxes.shape != (t, 4):
        raise ValueError(f"boxes must be ({t}, 4) like points, got {boxes.shape}")


@dataclass(frozen=True)
class _AudioLevels:
    db: np.ndarray  # (A,) float32 dB re the loudest frame
    silent: np.ndarray  # (A,) bool, clicks ignored
    speech: np.ndarray  # (A,) bool, short word gaps bridged
    peak_dbfs: float  # loudest frame, dB full scale
    floor_db: float  # noise floor, dB re peak
    speech_db: float  # speech level, dB re peak
    silence_thr: float
    speech_thr: float
    audible: bool


def _audio_levels(wav: np.ndarray, cfg: Config) -> _AudioLevels:
    """Loudness per video frame and which frames are silence or speech.

    The silence threshold adapts to the noise floor (a fan or traffic does not stop the user
    from being silent; the noise item reports the noise itself).
    """
    cc, fps = cfg.check, float(cfg.media.fps)
    hop = cfg.media.sample_rate // cfg.media.fps
    if len(wav) >= hop:
        db = frame_rms_db(wav, cfg.media)  # (A,)
        frame_rms = np.sqrt(np.mean(wav[: len(wav) // hop * hop].reshape(-1, hop) ** 2, axis=1))
        peak_dbfs = float(20 * np.log10(max(float(frame_rms.max()), 1e-12)))
    else:
        db, peak_dbfs = np.zeros(0, np.float32), -240.0
    audible = peak_dbfs >= cc.silent_dbfs and len(db) > 0
    if not audible:
        n = len(db)
        return _AudioLevels(db, np.ones(n, bool), np.zeros(n, bool), peak_dbfs,
                            float("nan"), float("nan"), cc.silence_db, cc.voiced_db, False)
    floor = float(np.percentile(db, _FLOOR_PERCENTILE))
    speech_level = float(np.percentile(db, _SPEECH_PERCENTILE))
    silence_thr = max(cc.silence_db, floor + cc.silence_above_floor_db)
    speech_thr = max(cc.voiced_db, silence_thr + cc.silence_above_floor_db)
    silent = _drop_short_runs(db < silence_thr, _frames(_BLIP_S, fps), False)
    speech = _drop_short_runs(db > speech_thr, _frames(_WORD_GAP_S, fps), False)
    return _AudioLevels(db, silent, speech, peak_dbfs, floor, speech_level,
                        silence_thr, speech_thr, True)


# ---------------------------------------------------------------- items

_TRUNCATION_S = 1.0  # decoded this much (and 5 %) shorter than the header says: cut short


def _duration_item(info: MediaInfo, n_frames: int, audio_s: float, cfg: Config) -> CheckItem:
    """The length of what was decoded: a file cut short (an interrupted copy or upload) keeps
    its header's duration, and the header alone reported a half file as a whole one. The
    header's duration is the longest stream's, so only video and audio both short of it (or
    the video, without audio) count as cut."""
    cc = cfg.check
    video_s = n_frames / cfg.media.fps
    decoded = max(video_s, audio_s)
    stated = float(info.duration) if _finite_positive(info.duration) else decoded
    seconds = min(stated, video_s) if n_frames else stated
    value = _fmt_duration(seconds)
    rec = _fmt_duration(cc.recommended_duration_s)
    if n_frames and stated - decoded > max(_TRUNCATION_S, 0.05 * stated):
        return CheckItem(DURATION, value, "warn",
                         f"The file says {_fmt_duration(stated)} but only {value} of it could "
                         "be decoded: it is cut short (an interrupted copy, upload or "
                         "recording). Copy or export it again; training uses the decoded part.")
    if seconds < cc.min_duration_s:
        return CheckItem(DURATION, value, "warn",
                         f"Only {value} of video. Record about {rec} so the model sees every "
                         f"mouth shape; {_fmt_duration(cc.min_duration_s)} is the least that "
                         "works.")
    advice = "" if seconds >= cc.recommended_duration_s else (
        f"Enough to train; about {rec} would show the model more mouth shapes.")
    return CheckItem(DURATION, value, "pass", advice)


def _frame_rate_item(info: MediaInfo, cfg: Config) -> CheckItem:
    target = cfg.media.fps
    if not info.has_video:
        return CheckItem(FRAME_RATE, "no video", "fail",
                         f"{Path(str(info.path)).name} has no video stream; give the "
                         "recording of the person, not an audio file.")
    fps = float(info.fps) if _finite_positive(info.fps) else float("nan")
    if not fps > 0:
        return CheckItem(FRAME_RATE, "unknown", "warn",
                         "The file does not state a frame rate (often a variable-frame-rate "
                         "phone video). It is resampled to 25 fps, but audio can drift; set a "
                         "fixed frame rate (25 or 30 fps) in the camera app.")
    value = f"{fps:.3g} fps" + ("" if abs(fps - target) < _FPS_TOLERANCE
                                 else f" -> {target} fps")
    if fps < cfg.check.min_fps:
        return CheckItem(FRAME_RATE, value, "warn",
                         f"{fps:.3g} fps is below {cfg.check.min_fps:.3g}: frames are repeated "
                         f"to reach {target} fps, so mouth shapes between them are missing and "
                         "the result stutters. Record at 25 or 30 fps.")
    if min(abs(fps - s) for s in _STANDARD_FPS) > _FPS_TOLERANCE:
        return CheckItem(FRAME_RATE, value, "warn",
                         f"{fps:.4g} fps is not a standard rate, typical of a phone's variable "
                         f"frame rate. It is resampled to {target} fps, but sound and lips can "
                         "drift apart; set a fixed frame rate (25 or 30 fps) in the camera app.")
    return CheckItem(FRAME_RATE, value, "pass")


def _face_size_item(info: MediaInfo, boxes: np.ndarray, found: np.ndarray,
                    cfg: Config) -> CheckItem:
    cc, crop = cfg.check, cfg.crop.size
    w, h = int(info.width or 0), int(info.height or 0)
    if not found.any():
        return CheckItem(FACE_SIZE, f"{w}x{h}, no face", "fail",
                         "No face was found, so there is no face to measure; see 'face found'.")
    side = float(np.median(boxes[found, 2] - boxes[found, 0]))
    value = f"{w}x{h}, face {side:.0f} px"
    status: Status = "pass"
    advice = []
    if side < cc.min_face_px:
        status = "warn"
        advice.append(f"The lower face is only {side:.0f} px wide; it is enlarged to {crop} px, "
                      "so lips and teeth come out blurry. Move the camera closer (or zoom in) "
                      f"so the face is at least {cc.min_face_px} px wide, more is better.")
    if w > 0 and h > 0:
        outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
        share = float(outside.mean())
        if share > cc.max_box_outside_fraction:
            status = "warn"
            value += f", {_pct(share)} at the edge"
            advice.append(f"The face crop runs past the picture edge in {_pct(share)} of frames; "
                          "those parts are filled with repeated edge pixels. Keep the whole "
                          "face and chin well inside the picture.")
    return CheckItem(FACE_SIZE, value, status, " ".join(advice))


def _face_found_item(found: np.ndarray, fps: float, cfg: Config) -> CheckItem:
    share = float(found.mean())
    gap = _longest_run(~found) / fps
    value = f"{_pct(share)} of frames" + (f", gap {gap:.1f} s" if gap > 0 else "")
    fail_below = 1 - cfg.landmarks.max_missing_fraction
    why = ("Face the camera, keep hands, hair and microphone off the face, and light the face "
           "evenly from the front.")
    if share < fail_below:
        return CheckItem(FACE_FOUND, value, "fail",
                         f"A face was found in only {_pct(share)} of frames (at least "
                         f"{_pct(fail_below)} needed; longest gap {gap:.1f} s). {why}")
    if share < cfg.check.min_face_fraction:
        return CheckItem(FACE_FOUND, value, "warn",
                         f"No face in {_pct(1 - share)} of frames (longest gap {gap:.1f} s); "
                         f"their landmarks are guessed from neighbours, which blurs the mouth. "
                         f"{why}")
    return CheckItem(FACE_FOUND, value, "pass")


def _head_motion_item(head: np.ndarray, scale: np.ndarray, found: np.ndarray,
                      cfg: Config) -> CheckItem:
    cc = cfg.check
    if not found.any():
        return CheckItem(HEAD_MOTION, "n/a", "warn", "No face found, so head motion is unknown.")
    xy = head[found]  # (n, 2) face widths
    spread = float(np.sqrt(np.sum(np.var(xy, axis=0))))  # std of the 2-D nose position
    lo, hi = np.percentile(xy, _MOTION_RANGE, axis=0)
    travel = float(np.max(hi - lo))
    s_lo, s_hi = np.percentile(scale[found], _MOTION_RANGE)
    size_change = float(s_hi - s_lo)
    value = f"std {spread:.2f}, range {travel:.2f} fw"
    advice = []
    if spread > cc.max_head_motion:
        advice.append(f"The head moves a lot (nose std {spread:.2f}, p5-p95 range {travel:.2f} "
                      f"face widths; aim below {cc.max_head_motion:.2f}). Strong motion smears "
                      "the generated mouth and shakes the pasted crop: sit still with the head "
                      "supported, and fix the camera on a tripod.")
    if size_change > cc.max_scale_change:
        value += f", size {_pct(size_change)}"
        advice.append(f"The face size changes by {_pct(size_change)} (moving toward or away "
                      "from the camera); keep a fixed distance.")
    return CheckItem(HEAD_MOTION, value, "warn" if advice else "pass", " ".join(advice))


def _mouth_item(opening: np.ndarray, found: np.ndarray, scheme: Scheme,
                offset: OffsetReport | None, cfg: Config) -> CheckItem:
    """A small range is a small mouth, not a still one, when its motion follows the speech
    (a clear mouth-sound correlation); only a range below the floor warns regardless."""
    if not scheme.has_mouth:
        return CheckItem(MOUTH_MOTION, "n/a", "warn",
                         f"Landmark scheme {scheme.name} has no lip points, so mouth motion "
                         "cannot be measured. Re-run preprocessing with the facemesh "
                         "(default) backend to check it.")
    if not found.any():
        return CheckItem(MOUTH_MOTION, "n/a", "warn", "No face found, so the mouth is unknown.")
    lo, hi = np.percentile(opening[found], _MOTION_RANGE)
    span = float(hi - lo)
    cc = cfg.check
    value = f"range {span:.3f} fw"
    follows = offset is not None and offset.whole.clear(cc)
    if span >= cc.min_mouth_range:
        return CheckItem(MOUTH_MOTION, value, "pass")
    if span >= cc.min_mouth_range_floor and follows:
        assert offset is not None
        return CheckItem(MOUTH_MOTION, value + ", follows the sound", "pass",
                         f"A small mouth (p5-p95 opening {span:.3f} face widths), but it opens "
                         f"with the speech (sync confidence {offset.whole.confidence:.1f}), so "
                         "it is enough to learn from.")
    want = (f"at least {cc.min_mouth_range:.3f}, or motion that follows the sound"
            if span >= cc.min_mouth_range_floor else f"at least {cc.min_mouth_range_floor:.3f}")
    return CheckItem(MOUTH_MOTION, value, "warn",
                     f"The mouth barely moves (p5-p95 opening {span:.3f} face widths, want "
                     f"{want}): not talking, or the mouth is hidden (hand, microphone, beard). "
                     "Talk naturally throughout with the mouth in full view.")


def _silence_item(info: MediaInfo, audio: _AudioLevels, fps: float, cfg: Config) -> CheckItem:
    cc = cfg.check
    if not audio.audible:
        if not getattr(info, "has_audio", True) or len(audio.db) == 0:
            what = "The video has no sound track"
        elif audio.peak_dbfs < _PLOT_DB_FLOOR:
            what = "The sound track is digital silence"
        else:
            what = f"The sound track is silent (loudest frame {audio.peak_dbfs:.0f} dBFS)"
        return CheckItem(SILENCE, "no sound", "fail",
                         f"{what}. Check that the microphone is on and selected, then record "
                         "again; lip-sync needs the person's own voice.")
    start = _longest_run(audio.silent, at="start") / fps
    end = _longest_run(audio.silent, at="end") / fps
    value = f"start {start:.1f} s, end {end:.1f} s"
    short = [f"{where} ({sec:.1f} s)" for where, sec in (("start", start), ("end", end))
             if sec < cc.min_silence_s]
    if short:
        return CheckItem(SILENCE, value, "warn",
                         f"Too little silence at the {' and '.join(short)}. Stay quiet with "
                         f"the mouth closed for about {cc.recommended_silence_s:.0f} s at the "
                         "start and the end: the model learns the closed, resting mouth from "
                         "these.")
    return CheckItem(SILENCE, value, "pass")


def _noise_item(audio: _AudioLevels, cfg: Config) -> CheckItem:
    if not audio.audible:
        return CheckItem(NOISE, "n/a", "warn", "No sound, so noise cannot be measured.")
    snr = audio.speech_db - audio.floor_db
    value = f"SNR {snr:.0f} dB"
    if snr < cfg.check.min_snr_db:
        return CheckItem(NOISE, value, "warn",
                         f"Background noise or music is only {snr:.0f} dB below the speech "
                         f"(want at least {cfg.check.min_snr_db:.0f} dB); the model then hears "
                         "noise instead of speech. Record in a quiet room with music, fans and "
                         "TV off, and the microphone close to the mouth.")
    return CheckItem(NOISE, value, "pass")


def _second_voice_item(voiced_closed: np.ndarray, audio: _AudioLevels, face_ok: np.ndarray,
                       scheme: Scheme, cfg: Config) -> CheckItem:
    cc = cfg.check
    if not scheme.has_mouth or not face_ok.any():
        return CheckItem(SECOND_VOICE, "n/a", "warn",
                         "Needs the lips; see 'mouth motion'. Make sure only the person on "
                         "camera speaks.")
    if not audio.audible or not audio.speech.any():
        return CheckItem(SECOND_VOICE, "n/a", "warn", "No speech, so there is nothing to compare.")
    n = min(len(voiced_closed), len(audio.speech))
    speech = audio.speech[:n] & face_ok[:n]
    share = float(voiced_closed[:n].sum() / max(int(speech.sum()), 1))
    value = f"{_pct(share)} of speech"
    if share > cc.max_closed_voiced_fraction:
        return CheckItem(SECOND_VOICE, value, "warn",
                         f"During {_pct(share)} of the speech the mouth stays closed for "
                         f"{cc.min_closed_voiced_s:.0f} s or longer (closed = in the lowest "
                         f"{_pct(cc.closed_range_share)} of this speaker's own range). Someone else may be talking "
                         "(off-screen voice, TV), or sound and picture are out of sync. Record "
                         "one speaker only. (A heuristic: loud sound while the lips rest.)")
    return CheckItem(SECOND_VOICE, value, "pass")


def _offset_item(offset: OffsetReport | None, applied: int, fps: float,
                 cfg: Config) -> CheckItem:
    """The sound against the picture; the fix is media.av_offset (auto by default)."""
    cc = cfg.check
    if offset is None:
        return CheckItem(AV_OFFSET, "n/a", "pass",
                         "Needs the lips and the sound; see 'mouth motion' and 'silence'.")
    w = offset.whole
    conf = "n/a" if not math.isfinite(w.confidence) else f"{w.confidence:.1f}"
    halves = "/".join(f"{h.offset:+d}" for h in offset.halves)
    detail = f"confidence {conf}" + (f", halves {halves}" if halves else "")
    ms = 1000 / fps
    before = (f"; the sound was shifted {abs(applied)} frames {'earlier' if applied > 0 else 'later'}"
              " by preprocessing (media.av_offset)") if applied else ""
    if not w.clear(cc):
        return CheckItem(AV_OFFSET, f"unclear ({w.offset:+d}?, {detail})", "pass",
                         f"Too little speech to measure the offset of the sound against the "
                         f"picture (confidence {conf}, clear from {cc.sync_min_confidence:.1f}; "
                         f"20 s of talking usually is){before}. If the lips look early or late, "
                         "set it by hand: --set media.av_offset=N (N frames, > 0 when the sound "
                         "is late).")
    value = f"{w.offset:+d} frames" + (f" after {applied:+d}" if applied else "") + f", {detail}"
    if math.isfinite(offset.drift) and abs(offset.drift) >= cc.sync_min_correction:
        starts = [x for x in offset.windows if x.clear(cc)]
        return CheckItem(AV_OFFSET, value + f", drift {offset.drift:+.1f}", "warn",
                         f"The sound slides against the picture by {offset.drift:+.1f} frames "
                         f"over the recording (from {starts[0].offset:+d} to "
                         f"{starts[-1].offset:+d}); one shift cannot fix that. This is typical "
                         "of a phone's variable frame rate or a separately recorded sound: "
                         "record at a fixed frame rate with the camera's own microphone.")
    if abs(w.offset) >= cc.sync_min_correction:
        late = "late" if w.offset > 0 else "early"
        return CheckItem(AV_OFFSET, value, "warn",
                         f"The sound is {abs(w.offset)} frames ({abs(w.offset) * ms:.0f} ms) "
                         f"{late} against the picture{before}. Training on it teaches a mouth "
                         "that is off by as much. Preprocess with --set media.av_offset=auto "
                         f"(corrects a clear offset of {cc.sync_min_correction} frames or more) "
                         f"or --set media.av_offset={w.offset + applied} to shift the sound "
                         "into place.")
    return CheckItem(AV_OFFSET, value, "pass",
                     (f"The sound was {abs(applied)} frames ({abs(applied) * ms:.0f} ms) "
                      f"{'late' if applied > 0 else 'early'} and preprocessing shifted it into "
                      "place (media.av_offset); set media.av_offset=0 to keep it as recorded.")
                     if applied else "")


# ---------------------------------------------------------------- plot

_COLOURS = {"pass": "#2e9d4a", "warn": "#e8a317", "fail": "#d1342f"}


def plot_check(report: CheckReport, path: str | Path | None = None) -> Figure:
    """One figure of the check: loudness, mouth, head motion, and the item verdicts.

    Built with `matplotlib.figure.Figure` (not pyplot), so it works with any backend,
    headless included, and leaks no pyplot state; in Jupyter, `display(fig)` or return it
    as the cell's value. Saved to `path` (PNG, PDF, … by suffix) when given.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    s, fps = report.series, report.fps
    rows = [(item, [] if item.status == "pass"
             else textwrap.wrap(item.advice, _PLOT_WRAP, break_on_hyphens=False))
            for item in report.items]
    table_lines = sum(_ROW_GAP + 1 + len(lines) for _, lines in rows) + 0.5
    fig = Figure(figsize=(12, 10.0 + 0.19 * table_lines), layout="constrained")
    grid = fig.add_gridspec(5, 1, height_ratios=[2.2, 2, 2, 1.8, 0.12 * table_lines + 0.2])
    ax_db = fig.add_subplot(grid[0])
    ax_mouth = fig.add_subplot(grid[1], sharex=ax_db)
    ax_head = fig.add_subplot(grid[2], sharex=ax_db)
    ax_sync = fig.add_subplot(grid[3])
    ax_tab = fig.add_subplot(grid[4])
    colour = _COLOURS[report.status]
    fig.suptitle(f"Recording check{f': {report.source}' if report.source else ''} - "
                 f"{report.summary()}", color=colour, fontsize=13, fontweight="bold")

    # loudness with the silence threshold; the start/end silence the check measures in green
    db = np.asarray(s.get("loudness_db", np.zeros(0)), np.float64)
    t_a = np.arange(len(db)) / fps
    if len(db) and report.has_sound:
        _plot_envelope(ax_db, t_a, np.maximum(db, _PLOT_DB_FLOOR), "#3b6ea8", "loudness")
        silent = np.asarray(s.get("silent", np.zeros(len(db), bool)), bool)
        _shade(ax_db, t_a, silent, "#d5eed9", "pause")
        ends = np.zeros_like(silent)
        n_start, n_end = _longest_run(silent, at="start"), _longest_run(silent, at="end")
        ends[:n_start] = True
        ends[len(ends) - n_end:] = True
        _shade(ax_db, t_a, ends, "#7fcf8c", "start / end silence")
        for n, x, ha in ((n_start, 0.0, "left"), (n_end, t_a[-1], "right")):
            ax_db.annotate(f" {n / fps:.1f} s ", (x, 0.93), xycoords=("data", "axes fraction"),
                           ha=ha, va="top", fontsize=8, color="#1e6b30", fontweight="bold")
        ax_db.axhline(report.silence_threshold_db, color="#2e9d4a", ls="--", lw=1,
                      label=f"silence below {report.silence_threshold_db:.0f} dB")
        ax_db.axhline(report.speech_threshold_db, color="#3b6ea8", ls=":", lw=1,
                      label=f"speech above {report.speech_threshold_db:.0f} dB")
        low = min(float(np.min(db)), report.silence_threshold_db) - 8
        ax_db.set_ylim(max(low, _PLOT_DB_FLOOR), 3)
        ax_db.legend(loc="lower center", fontsize=8, ncol=5, framealpha=0.9)
    else:
        ax_db.text(0.5, 0.5, "no sound", transform=ax_db.transAxes, ha="center",
                   color=_COLOURS["fail"], fontsize=14, fontweight="bold")
        ax_db.set_yticks([])
    ax_db.set_ylabel("loudness\n(dB re peak)")
    ax_db.set_title(_title_of(report, SILENCE, NOISE), loc="left", fontsize=10)

    # mouth opening with voiced-but-closed stretches highlighted
    opening = np.asarray(s.get("mouth_opening", np.zeros(0)), np.float64)
    t_v = np.arange(len(opening)) / fps
    found = s.get("face_found")
    if len(opening) and np.isfinite(opening).any():
        _plot_envelope(ax_mouth, t_v, opening, "#7a4ea3", "mouth opening")
        if math.isfinite(report.closed_threshold):
            ax_mouth.axhline(report.closed_threshold, color="#555555", ls="--", lw=1,
                             label="closed below")
        _shade(ax_mouth, t_v, s.get("voiced_closed"), "#f4a3a0", "loud sound, closed mouth")
        ax_mouth.legend(loc="upper right", fontsize=8, ncol=3, framealpha=0.9)
    else:
        ax_mouth.text(0.5, 0.5, "no lip landmarks", transform=ax_mouth.transAxes,
                      ha="center", color="#888888")
    _shade(ax_mouth, t_v, None if found is None else ~np.asarray(found, bool), "#cccccc",
           None)
    ax_mouth.set_ylabel("mouth opening\n(face widths)")
    ax_mouth.set_title(_title_of(report, MOUTH_MOTION, SECOND_VOICE), loc="left", fontsize=10)

    # head motion in face widths, the allowed std as a band
    hx = np.asarray(s.get("head_x", np.zeros(0)), np.float64)
    t_h = np.arange(len(hx)) / fps
    if len(hx):
        lim = report.max_head_motion
        ax_head.axhspan(-lim, lim, color="#e8f3ea", zorder=0, label=f"±{lim:.2f} (max std)")
        ax_head.plot(t_h, hx, color="#c0392b", lw=0.7, label="nose x")
        ax_head.plot(t_h, np.asarray(s["head_y"], np.float64), color="#2c7fb8", lw=0.7,
                     label="nose y")
        if "face_scale" in s:
            ax_head.plot(t_h, np.asarray(s["face_scale"], np.float64), color="#777777", lw=0.7,
                         ls=":", label="face size change")
        _shade(ax_head, t_h, None if found is None else ~np.asarray(found, bool), "#cccccc",
               "no face")
        ax_head.legend(loc="upper right", fontsize=8, ncol=5, framealpha=0.9)
    ax_head.set_ylabel("head offset\n(face widths)")
    if len(t_h) and t_h[-1] > _MINUTES_AFTER_S:
        from matplotlib.ticker import FuncFormatter, MultipleLocator

        ax_head.xaxis.set_major_locator(MultipleLocator(30 if t_h[-1] <= 600 else 60))
        ax_head.xaxis.set_major_formatter(FuncFormatter(
            lambda x, _: f"{int(x) // 60}:{int(x) % 60:02d}"))
        ax_head.set_xlabel("time (min:s)")
    else:
        ax_head.set_xlabel("time (s)")
    ax_head.set_title(_title_of(report, HEAD_MOTION, FACE_FOUND), loc="left", fontsize=10)
    for ax in (ax_db, ax_mouth, ax_head):
        ax.grid(alpha=0.3)
        ax.margins(x=0)

    _plot_offset(ax_sync, report)

    # the verdicts: coloured badge, item, value, and advice for what did not pass
    ax_tab.set_axis_off()
    ax_tab.set_xlim(0, 1)
    ax_tab.set_ylim(table_lines, 0)
    y = 0.6
    for item, lines in rows:
        ax_tab.text(0.005, y, f" {item.status.upper()} ", family="monospace", fontsize=9,
                    fontweight="bold", color="white", va="center",
                    bbox={"boxstyle": "round,pad=0.25", "fc": _COLOURS[item.status], "ec": "none"})
        ax_tab.text(0.065, y, item.name, fontsize=9.5, fontweight="bold", va="center")
        ax_tab.text(0.18, y, item.value, fontsize=9.5, va="center")
        for k, line in enumerate(lines, start=1):
            ax_tab.text(0.18, y + k, line, fontsize=8.5, color="#444444", va="center")
        y += _ROW_GAP + 1 + len(lines)
    ax_tab.legend(handles=[Patch(color=c, label=k) for k, c in _COLOURS.items()],
                  loc="lower right", fontsize=8, ncol=3, frameon=False)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        log.info("wrote recording check figure %s", path)
    return fig


def _plot_offset(ax: Any, report: CheckReport) -> None:
    """Mouth-sound correlation against the lag, whole clip and halves; the peak marked."""
    offset = report.offset
    ax.set_title(_title_of(report, AV_OFFSET), loc="left", fontsize=10)
    ax.set_xlabel("lag (frames; > 0: the sound is late against the picture)")
    ax.set_ylabel("mouth-sound\ncorrelation")
    ax.grid(alpha=0.3)
    if offset is None:
        ax.text(0.5, 0.5, "needs lips and sound", transform=ax.transAxes, ha="center",
                color="#888888")
        return
    w = offset.whole
    ax.plot(w.lags, w.corr, color="#7a4ea3", lw=1.6, marker="o", ms=3, label="whole clip")
    for h, style in zip(offset.halves, ("--", ":")):
        ax.plot(h.lags, h.corr, color="#7a4ea3", lw=0.9, ls=style,
                label=f"{h.start_s:.0f}-{h.stop_s:.0f} s: {h.offset:+d}")
    ax.axvline(0, color="#555555", lw=0.8)
    if math.isfinite(w.confidence):
        ax.axvline(w.offset, color=_COLOURS[report[AV_OFFSET].status], lw=1.5,
                   label=f"peak {w.offset:+d} (confidence {w.confidence:.1f})")
    ax.set_xlim(w.lags[0], w.lags[-1])
    ax.legend(loc="lower left", fontsize=8, ncol=2, framealpha=0.9)


def _plot_envelope(ax: Any, t: np.ndarray, y: np.ndarray, colour: str, label: str) -> None:
    """Plot a curve; when longer than the figure has pixels, plot its min-max band per bin.

    Per-frame curves of a 5-minute video are 7500 points: drawn raw they become a solid block.
    """
    k = len(y) // _PLOT_BINS
    if k < 2:
        ax.plot(t, y, color=colour, lw=0.7, label=label)
        return
    n = len(y) // k * k
    bins = y[:n].reshape(-1, k)  # (n_bins, k)
    tb = t[:n].reshape(-1, k).mean(axis=1)
    lo, hi = np.fmin.reduce(bins, axis=1), np.fmax.reduce(bins, axis=1)
    finite = np.isfinite(bins)
    mean = np.where(finite, bins, 0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    mean[~finite.any(axis=1)] = np.nan
    ax.fill_between(tb, lo, hi, color=colour, alpha=0.3, lw=0, label=f"{label} (min-max)")
    ax.plot(tb, mean, color=colour, lw=0.8, label=f"{label} (mean of {k / _fps_of(t):.2g} s)")


def _fps_of(t: np.ndarray) -> float:
    return 1.0 / float(t[1] - t[0]) if len(t) > 1 else 1.0


def _shade(ax: Any, t: np.ndarray, mask: np.ndarray | None, colour: str,
           label: str | None) -> None:
    """Shade the time spans where mask is True, full height, as one artist (fast on 1e4 runs)."""
    if mask is None:
        return
    mask = np.asarray(mask, bool)[: len(t)]
    if not mask.any():
        return
    ax.fill_between(t[: len(mask)], 0, 1, where=mask, step="mid", color=colour, alpha=0.6,
                    lw=0, transform=ax.get_xaxis_transform(), label=label, zorder=0)


def _title_of(report: CheckReport, *names: str) -> str:
    parts = []
    for name in names:
        try:
            item = report[name]
        except KeyError:
            continue
        parts.append(f"{name}: {item.value} [{item.status}]")
    return "   |   ".join(parts)


# ---------------------------------------------------------------- small helpers

def true_runs(mask: np.ndarray) -> np.ndarray:
    """(K, 2) [start, end) of the True runs of a 1-D bool mask."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return edges.reshape(-1, 2)


def _drop_short_runs(mask: np.ndarray, min_len: int, value: bool) -> np.ndarray:
    """Flip runs equal to `value` shorter than `min_len` frames.

    value=False fills short gaps (clicks inside silence, pauses between words); value=True
    keeps only runs of at least min_len frames.
    """
    mask = np.asarray(mask, bool).copy()
    target = mask if value else ~mask
    for start, end in true_runs(target):
        if end - start < min_len:
            mask[start:end] = not value
    return mask


def _longest_run(mask: np.ndarray, at: Literal["any", "start", "end"] = "any") -> int:
    """Length in frames of the longest True run, or of the run touching the start/end."""
    runs = true_runs(mask)
    if not len(runs):
        return 0
    if at == "start":
        return int(runs[0, 1]) if runs[0, 0] == 0 else 0
    if at == "end":
        return int(runs[-1, 1] - runs[-1, 0]) if runs[-1, 1] == len(mask) else 0
    return int(np.max(runs[:, 1] - runs[:, 0]))


def _frames(seconds: float, fps: float) -> int:
    return max(round(seconds * fps), 1)


def _median(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def _finite_positive(x: Any) -> bool:
    try:
        return math.isfinite(float(x)) and float(x) > 0
    except (TypeError, ValueError):
        return False


def _pct(share: float) -> str:
    return f"{100 * share:.1f} %" if share < 0.995 else f"{100 * share:.0f} %"


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" + (f" {rest} s" if rest else "")


def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _json_list(values: Sequence[Any] | np.ndarray) -> list[Any]:
    arr = np.asarray(values)
    if arr.dtype == bool:
        return arr.tolist()
    arr = arr.astype(np.float64)
    return [round(v, 5) if math.isfinite(v) else None for v in arr.tolist()]


__all__ = ["CheckItem", "CheckReport", "check_recording", "plot_check"]
