"""The recording check on synthetic recordings: a good one passes, each defect is named."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from synctalk_lib.check import (
    AV_OFFSET,
    DURATION,
    FACE_FOUND,
    FACE_SIZE,
    FRAME_RATE,
    HEAD_MOTION,
    MOUTH_MOTION,
    NOISE,
    SECOND_VOICE,
    SILENCE,
    CheckReport,
    check_recording,
    plot_check,
)
from synctalk_lib.config import get_config
from synctalk_lib.landmarks import MEDIAPIPE, SYNCTALK110, detect_image, face_width

matplotlib.use("Agg")

FPS, SR = 25, 16_000
HOP = SR // FPS
ALL_ITEMS = [DURATION, FRAME_RATE, FACE_SIZE, FACE_FOUND, HEAD_MOTION, MOUTH_MOTION, SILENCE,
             NOISE, SECOND_VOICE, AV_OFFSET]
SPEECH_RMS = 0.3
FRAME_W, FRAME_H = 1920, 1080


@dataclass(frozen=True)
class FakeInfo:
    """Stand-in for media.MediaInfo with the fields the check reads."""

    path: str = "me.mp4"
    duration: float = 300.0
    has_video: bool = True
    has_audio: bool = True
    width: int = FRAME_W
    height: int = FRAME_H
    fps: float = 30.0
    video_codec: str = "h264"
    audio_codec: str = "aac"
    audio_rate: int = 48_000
    audio_channels: int = 2


@pytest.fixture(scope="module")
def template() -> np.ndarray:
    """A real Face Mesh (468, 2) of a still face, scaled to a ~280 px face mid-frame."""
    import skimage.data

    pts = detect_image(skimage.data.astronaut())
    assert pts is not None
    pts = (pts - pts.mean(axis=0)) * 3 + np.array([FRAME_W / 2, FRAME_H / 2])
    pts[MEDIAPIPE.lip_bottom] = pts[MEDIAPIPE.lip_top]  # closed mouth at rest
    return pts.astype(np.float32)


def speech_envelope(n: int, lead: int, tail: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) per-frame speech loudness in [0, 1]: about 4 syllables/s of varying length (as
    speech, not a metronome, so the mouth-sound correlation has one peak), a 0.5 s pause
    every 4 s."""
    t = np.arange(n) / FPS
    rate = np.repeat(rng.uniform(1.2, 2.8, n // 6 + 1), 6)[:n]  # half-syllables per second
    phase = 2 * np.pi * np.cumsum(rate) / FPS
    env = np.abs(np.sin(phase)) * rng.uniform(0.5, 1.0, n // 6 + 1).repeat(6)[:n]
    env[(t % 4.0) > 3.5] = 0
    env[:lead] = 0
    env[n - tail:] = 0
    return env.astype(np.float32)


def make_case(template: np.ndarray, *, seconds: float = 300, lead_s: float = 5,
              tail_s: float = 5, noise_db: float = -60, mouth_gain: float = 0.12,
              head_amp: float = 0.0, found_share: float = 1.0, silent: bool = False,
              closed_from_s: float | None = None, seed: int = 0) -> dict:
    """Keyword arguments of check_recording for a synthetic recording.

    Audio is noise shaped by the speech envelope over a floor `noise_db` below speech; the
    mouth (landmark 14) opens by mouth_gain × envelope face widths; the head sways
    head_amp face widths; from closed_from_s on the mouth rests while the sound goes on.
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    env = speech_envelope(n, int(lead_s * FPS), int(tail_s * FPS), rng)
    wav = rng.standard_normal(n * HOP).astype(np.float32) * SPEECH_RMS
    wav *= np.repeat(env, HOP) + 10 ** (noise_db / 20)
    if silent:
        wav[:] = 0
    fw = float(face_width(template, MEDIAPIPE))
    t = np.arange(n) / FPS
    sway = head_amp * fw * np.stack([np.sin(2 * np.pi * 0.1 * t),
                                     0.5 * np.cos(2 * np.pi * 0.07 * t)], axis=1)
    jitter = rng.normal(0, 0.3, (n, 2))  # detector noise, pixels
    points = template[None] + (sway + jitter)[:, None, :].astype(np.float32)  # (n, 468, 2)
    opening = mouth_gain * env
    if closed_from_s is not None:
        opening[int(closed_from_s * FPS):] = 0
    points[:, MEDIAPIPE.lip_bottom, 1] += opening * fw
    found = rng.random(n) < found_share if found_share < 1 else np.ones(n, bool)
    x0, x1 = points[:, MEDIAPIPE.left, 0], points[:, MEDIAPIPE.right, 0]
    y0 = points[:, MEDIAPIPE.top, 1]
    boxes = np.stack([x0, y0, x1, y0 + (x1 - x0)], axis=1)
    return {"info": FakeInfo(duration=seconds), "wav": wav, "points": points, "found": found,
                "scheme": MEDIAPIPE, "boxes": boxes, "cfg": get_config("tiny")}


def statuses(report: CheckReport) -> dict[str, str]:
    return {item.name: item.status for item in report.items}


@pytest.fixture(scope="module")
def good(template) -> CheckReport:
    return check_recording(**make_case(template))


def test_good_recording_passes_every_item(good):
    assert statuses(good) == {name: "pass" for name in ALL_ITEMS}, str(good)
    assert good.passed
    assert good[SILENCE].value == "start 5.0 s, end 5.0 s"


def test_short_recording_warns_about_duration(template):
    report = check_recording(**make_case(template, seconds=20, lead_s=2, tail_s=2))
    assert report[DURATION].status == "warn"
    assert "20 s" in report[DURATION].advice and "5 min" in report[DURATION].advice
    assert report.passed  # a warning, not a failure
    assert report[SILENCE].status == "pass"


def test_missing_leading_silence_warns(template):
    report = check_recording(**make_case(template, lead_s=0))
    assert report[SILENCE].status == "warn"
    assert "start" in report[SILENCE].advice and "end" not in report[SILENCE].advice.split(".")[0]


def test_heavy_head_motion_warns(template):
    report = check_recording(**make_case(template, head_amp=0.6))
    assert report[HEAD_MOTION].status == "warn"
    assert statuses(report)[MOUTH_MOTION] == "pass"


@pytest.mark.parametrize("found_share", [1.0, 0.95])  # missed detections split no stretch
def test_closed_mouth_during_speech_flags_a_second_voice(template, found_share):
    report = check_recording(**make_case(template, closed_from_s=200, found_share=found_share))
    assert report[SECOND_VOICE].status == "warn", str(report)
    assert "heuristic" in report[SECOND_VOICE].advice.lower()
    assert report[MOUTH_MOTION].status == "pass"  # the mouth did move before
    assert report.series["voiced_closed"][200 * FPS + 10:290 * FPS].mean() > 0.5
    assert not report.series["voiced_closed"][: 190 * FPS].any()


def test_mouth_that_never_moves_warns_twice(template):
    report = check_recording(**make_case(template, mouth_gain=0.0))
    assert report[MOUTH_MOTION].status == "warn"
    assert report[SECOND_VOICE].status == "warn"


def test_a_small_mouth_that_follows_the_speech_passes_both_mouth_items(template):
    """0.02 face widths of opening, under the 0.05 a mouth shows on its own, but in sync."""
    report = check_recording(**make_case(template, mouth_gain=0.02))
    assert report[MOUTH_MOTION].status == "pass", str(report)
    assert "follows the sound" in report[MOUTH_MOTION].value
    assert report[SECOND_VOICE].status == "pass", str(report)
    assert report[AV_OFFSET].status == "pass" and report[AV_OFFSET].value.startswith("+0")


def test_silent_audio_fails(template):
    report = check_recording(**make_case(template, silent=True))
    assert report[SILENCE].status == "fail"
    assert not report.passed


def test_few_faces_found_fails(template):
    report = check_recording(**make_case(template, found_share=0.5))
    assert report[FACE_FOUND].status == "fail"
    assert not report.passed


def test_some_faces_missing_warns(template):
    report = check_recording(**make_case(template, found_share=0.95))
    assert report[FACE_FOUND].status == "warn"


def test_noise_floor_15_db_below_speech_warns(template):
    report = check_recording(**make_case(template, noise_db=-15))
    assert report[NOISE].status == "warn", str(report)
    assert report[SILENCE].status == "pass"  # quiet in a noisy room is still silence


def test_small_face_and_crop_past_the_edge_warn(template):
    case = make_case(template, seconds=20, lead_s=2, tail_s=2)
    case["info"] = FakeInfo(duration=20, width=FRAME_W, height=FRAME_H)
    case["boxes"] = case["boxes"].copy()
    case["boxes"][:, 2:] = case["boxes"][:, :2] + 100  # 100 px face
    assert check_recording(**case)[FACE_SIZE].status == "warn"
    case = make_case(template, seconds=20, lead_s=2, tail_s=2)
    case["boxes"] = case["boxes"] + np.array([FRAME_W / 2, 0, FRAME_W / 2, 0], np.float32)
    item = check_recording(**case)[FACE_SIZE]
    assert item.status == "warn" and "edge" in item.advice


@pytest.mark.parametrize("fps, status", [(30.0, "pass"), (25.0, "pass"), (29.97, "pass"),
                                         (15.0, "warn"), (29.83, "warn")])
def test_frame_rate_warns_on_low_or_odd_rates(template, fps, status):
    case = make_case(template, seconds=20, lead_s=2, tail_s=2)
    case["info"] = FakeInfo(duration=20, fps=fps)
    assert check_recording(**case)[FRAME_RATE].status == status


def test_scheme_without_lips_reports_mouth_as_not_available(template):
    case = make_case(template, seconds=20, lead_s=2, tail_s=2)
    case["points"] = case["points"][:, : SYNCTALK110.n_points]
    case["scheme"] = SYNCTALK110
    report = check_recording(**case)
    assert report[MOUTH_MOTION].status == "warn" and report[MOUTH_MOTION].value == "n/a"
    assert "lip" in report[MOUTH_MOTION].advice


def test_mismatched_arrays_raise_naming_the_array(template):
    case = make_case(template, seconds=4, lead_s=1, tail_s=1)
    case["found"] = case["found"][:-1]
    with pytest.raises(ValueError, match="found"):
        check_recording(**case)


def test_report_is_json_and_text_names_every_item(good):
    data = json.loads(json.dumps(good.to_dict(), allow_nan=False))
    assert [item["name"] for item in data["items"]] == ALL_ITEMS
    assert data["passed"] is True and len(data["series"]["loudness_db"]) == 300 * FPS
    text = str(good)
    for name in ALL_ITEMS:
        assert name in text
    assert text.splitlines()[0].endswith("PASS: the recording looks good")


def test_text_wraps_advice_under_its_column(template):
    report = check_recording(**make_case(template, seconds=20, lead_s=0, tail_s=0))
    lines = report.to_text(width=100).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[0].startswith("Recording check of me.mp4: WARN")


def test_plot_check_returns_figure_and_writes_png(good, template, tmp_path):
    from matplotlib.figure import Figure

    fig = plot_check(good, tmp_path / "good.png")
    assert isinstance(fig, Figure) and len(fig.axes) >= 3
    assert (tmp_path / "good.png").stat().st_size > 10_000
    bad = check_recording(**make_case(template, silent=True, found_share=0.5, seconds=20))
    assert isinstance(plot_check(bad), Figure)  # no path: nothing written, no error


def test_accepts_the_real_media_info(template):
    media = pytest.importorskip("synctalk_lib.media")
    case = make_case(template, seconds=20, lead_s=2, tail_s=2)
    case["info"] = media.MediaInfo(
        path=Path("take1.mp4"), duration=20.0, has_video=True, has_audio=True, width=FRAME_W,
        height=FRAME_H, fps=29.97, video_codec="h264", audio_codec="aac", audio_rate=48_000,
        audio_channels=2,
    )
    report = check_recording(**case)
    assert report.source == "take1.mp4" and report[FRAME_RATE].status == "pass"


def test_a_file_cut_short_reports_its_decoded_length_and_warns(template):
    """A recording cut in half keeps its header's duration; the check reports what was
    decoded and says the file is cut short. Audio outlasting the video is not a cut."""
    case = make_case(template, seconds=30, lead_s=2, tail_s=2)
    case["info"] = FakeInfo(duration=60.0)  # the header of the whole file
    item = check_recording(**case)[DURATION]
    assert item.status == "warn" and "cut short" in item.advice
    assert item.value == check_recording(**make_case(template, seconds=30, lead_s=2,
                                                     tail_s=2))[DURATION].value
    longer_audio = make_case(template, seconds=30, lead_s=2, tail_s=2)
    longer_audio["info"] = FakeInfo(duration=33.0)
    longer_audio["wav"] = np.concatenate([longer_audio["wav"],
                                          np.zeros(3 * 16_000, np.float32)])
    assert "cut short" not in check_recording(**longer_audio)[DURATION].advice
