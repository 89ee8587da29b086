"""Second voice on the shared real clips: what the check flags, and two rules tried for a
voice *over* the speaker's own speech (docs/recording_check.md, "Mouth motion and second
voice").

Cases, on the landmarks of `../shared/data/real_talk_a`-`f` (detected as preprocessing does):
- clean: each clip as recorded (no rule may alarm on any of them);
- overlap: `speech_en_60s.wav` (from 5 s) mixed at the clip's loudness into 8-14 s of
  real_talk_d, _e and _f while the speaker talks;
- listening: real_talk_d's own closed mouth (its pause at 46.1-47.6 s, played back and forth)
  spliced in at 20 s for 4 or 6 s, with another voice (`speech_en_60s.wav` or real_talk_e's
  sound, from 5, 10 or 20 s) over it: the check's own second-voice item.

Rules tried for the overlap, per 5 s window (1 s hop), counted where two neighbouring windows
are both ≥ 90 % speech and both under a threshold:
- corr: mouth-sound correlation of av_offset at the clip's lag (±1), which a second voice
  might dilute;
- gap: loudness (speech band, dB above the floor) of the window's most open 20 % of frames
  minus its most closed 20 %: a lone speaker is quiet when the lips close, a second voice
  fills those frames.

    .venv/bin/python bench/second_voice.py   # ~1 min; prints tables, writes JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from synctalk_lib import av_offset, check, crop, landmarks, media, preprocess
from synctalk_lib.config import get_config
from synctalk_lib.source import VideoFrames

DATA = ROOT.parent / "shared" / "data"
CFG = get_config("tiny")
FPS, SR = CFG.media.fps, CFG.media.sample_rate
HOP = SR // FPS
CLIPS = [f"real_talk_{c}" for c in "abcdef"]
WINDOW, STEP = 5 * FPS, FPS  # frames
OPEN_SHARE = 0.2  # the most open / most closed fifth of a window's frames
MIN_SPEECH = 0.9  # windows with at least this share of speech frames
CORR_THRESHOLDS = (0.10, 0.15, 0.20, 0.25)
GAP_THRESHOLDS = (2.0, 3.0, 4.0, 5.0, 6.0)  # dB


def load(name: str) -> dict:
    """check_recording's keyword arguments for a shared clip (landmarks detected here)."""
    clip = DATA / f"{name}.mp4"
    frames = VideoFrames.open(clip, FPS)
    points, found, scheme = preprocess._detect_all(frames, CFG, progress=False)
    points = landmarks.fill_missing(points, found)
    boxes = crop.smooth_boxes(crop.boxes_from_landmarks(points, scheme), CFG.crop.smooth_frames)
    return {"info": media.probe(clip), "wav": media.load_audio(clip, SR), "points": points,
            "found": found, "scheme": scheme, "boxes": boxes, "cfg": CFG}


def band_level(wav: np.ndarray) -> np.ndarray:
    """(A,) speech-band loudness per frame in dB above its 5th percentile."""
    change = av_offset.speech_signal(wav, CFG.media)  # floored dB, differenced
    level = np.cumsum(change)
    return level - np.percentile(level, 5)


def window_scores(case: dict) -> dict[str, np.ndarray]:
    """Per window: start (s), speech share, corr and gap (see the module docstring)."""
    opening = landmarks.mouth_opening(case["points"], case["scheme"])
    found = case["found"]
    report = av_offset.measure_offset(opening, case["wav"], CFG.check, CFG.media, found)
    lag = report.whole.offset if report.whole.clear(CFG.check) else 0
    mouth = av_offset.mouth_signal(opening, found)
    sound = av_offset.speech_signal(case["wav"], CFG.media)
    level = band_level(case["wav"])
    speech = check._audio_levels(case["wav"], CFG).speech
    n = min(len(mouth), len(sound), len(speech))
    shifted = np.roll(level[:n], -lag)  # the sound of frame t heard at t + lag
    rows = []
    for a in range(0, n - WINDOW + 1, STEP):
        b = a + WINDOW
        corr = av_offset.correlate(mouth[a:b], sound[a:b], np.arange(lag - 1, lag + 2))
        ok = found[a:b]
        o, lv = opening[a:b][ok], shifted[a:b][ok]
        lo, hi = np.percentile(o, [100 * OPEN_SHARE, 100 * (1 - OPEN_SHARE)])
        gap = float(np.median(lv[o >= hi]) - np.median(lv[o <= lo]))
        rows.append((a / FPS, float(speech[a:b].mean()), float(np.nanmax(corr)), gap))
    cols = np.array(rows, np.float64).reshape(-1, 4)
    return {"start_s": cols[:, 0], "speech": cols[:, 1], "corr": cols[:, 2], "gap": cols[:, 3]}


def alarms(scores: dict[str, np.ndarray], key: str, threshold: float) -> list[float]:
    """Starts (s) of two neighbouring speech windows both under the threshold."""
    low = (scores["speech"] >= MIN_SPEECH) & (scores[key] < threshold)
    both = low[:-1] & low[1:]
    return [float(t) for t in scores["start_s"][:-1][both]]


def mix_over(case: dict, voice: np.ndarray, start_s: float, stop_s: float) -> dict:
    """The clip with `voice` added at its own loudness between start_s and stop_s."""
    wav = case["wav"].copy()
    a, b = int(start_s * SR), int(stop_s * SR)
    part = voice[: b - a]
    wav[a:b] += part * np.sqrt(np.mean(wav[a:b] ** 2) / np.mean(part ** 2))
    return {**case, "wav": wav}


def listening(case: dict, seconds: float, voice: np.ndarray, at_s: float = 20.0) -> dict:
    """real_talk_d's closed mouth from its 46.1-47.6 s pause, back and forth, spliced in at
    at_s with the pause's room tone and `voice` at the speaker's loudness."""
    points, found, boxes, wav = case["points"], case["found"], case["boxes"], case["wav"]
    opening = landmarks.mouth_opening(points, case["scheme"])
    lo, hi = round(46.1 * FPS), round(47.6 * FPS)
    closed = opening[lo:hi] < np.percentile(opening[found], 5) + 0.01
    start, stop = max(check.true_runs(closed), key=lambda r: r[1] - r[0]) + lo
    idx = np.resize(np.r_[start:stop, stop - 2:start:-1], round(seconds * FPS))
    frames = wav[: len(wav) // HOP * HOP].reshape(-1, HOP)
    speech = check._audio_levels(wav, CFG).speech[: len(frames)]
    level = np.sqrt(np.mean(frames[: len(speech)][speech] ** 2))
    part = voice[: len(idx) * HOP]
    sound = frames[idx].ravel() + part * level / np.sqrt(np.mean(part ** 2))
    a = round(at_s * FPS)
    return {**case,
            "points": np.concatenate([points[:a], points[idx], points[a:]]),
            "found": np.concatenate([found[:a], found[idx], found[a:]]),
            "boxes": np.concatenate([boxes[:a], boxes[idx], boxes[a:]]),
            "wav": np.concatenate([wav[: a * HOP], sound, wav[a * HOP:]]).astype(np.float32)}


def main() -> None:
    cases = {name: load(name) for name in CLIPS}
    english = media.load_audio(DATA / "speech_en_60s.wav", SR)
    other_e = media.load_audio(DATA / "real_talk_e.mp4", SR)
    out: dict = {"clean": {}, "overlap": {}, "listening": []}
    print("clip: the check's second voice | windows | rule alarms (two windows in a row)")
    runs = [(name, case, "clean") for name, case in cases.items()]
    runs += [(name, mix_over(cases[name], english[5 * SR:], 8, 14), "overlap")
             for name in ("real_talk_d", "real_talk_e", "real_talk_f")]
    for name, case, kind in runs:
        item = check.check_recording(**case)[check.SECOND_VOICE]
        scores = window_scores(case)
        row = {"second_voice": f"{item.status} {item.value}", "windows": len(scores["gap"]),
               "corr": {t: alarms(scores, "corr", t) for t in CORR_THRESHOLDS},
               "gap": {t: alarms(scores, "gap", t) for t in GAP_THRESHOLDS},
               "min_corr": float(scores["corr"].min()), "min_gap": float(scores["gap"].min())}
        out[kind][name] = row
        marks = " ".join(f"corr<{t}:{len(v)}" for t, v in row["corr"].items())
        marks += " " + " ".join(f"gap<{t:g}:{len(v)}" for t, v in row["gap"].items())
        print(f"{kind:8} {name}: {row['second_voice']:<24} | {row['windows']:3d} | {marks}")
    print("\nlistening (real_talk_d, his closed mouth spliced in at 20 s): second voice item")
    for other, voice in (("speech_en_60s", english), ("real_talk_e", other_e)):
        for offset in (5, 10, 20):
            for seconds in (4.0, 6.0):
                case = listening(cases["real_talk_d"], seconds, voice[offset * SR:])
                item = check.check_recording(**case)[check.SECOND_VOICE]
                out["listening"].append({"voice": other, "from_s": offset, "seconds": seconds,
                                         "status": item.status, "value": item.value})
                print(f"  {other} from {offset:2d} s, {seconds:.0f} s: {item.status} {item.value}")
    path = ROOT / "outputs" / "bench" / "second_voice.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
