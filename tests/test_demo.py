"""The embedded demo: a talking astronaut made from pip-package assets only."""

import json

import numpy as np
import pytest

from synctalk_lib import demo, media

SECONDS = 8.0
LEAD = 1.5  # shorter than the default 3 s so an 8 s clip still holds a sentence


@pytest.fixture(scope="module")
def face() -> demo.TalkingFace:
    return demo.TalkingFace.from_photo()


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> demo.DemoPaths:
    return demo.make_demo(tmp_path_factory.mktemp("dataset"), seconds=SECONDS, seed=0,
                          lead_silence=LEAD)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1)


def _mouth_box(face: demo.TalkingFace) -> tuple[slice, slice]:
    lips = face.points[demo.LOWER_OUTER_LIP + demo.UPPER_OUTER_LIP]
    (x0, y0), (x1, y1) = lips.min(axis=0).astype(int), lips.max(axis=0).astype(int)
    return slice(y0, y1 + 10), slice(x0, x1 + 1)


def test_opening_zero_is_the_photo(face):
    assert np.array_equal(face.render(0.0), face.image)


def test_opening_moves_the_mouth_and_nothing_above_or_around(face):
    closed, wide = face.render(0.0), face.render(1.0)
    diff = _diff(closed, wide)
    ys, xs = _mouth_box(face)
    assert diff[ys, xs].mean() > 25  # a dark cavity opened and the lower lip moved
    nose_tip = int(face.points[1, 1])
    assert diff[:nose_tip].max() == 0  # eyes, hair and background above the nose tip
    for corner in (diff[:64, :64], diff[:64, -64:], diff[-64:, :64], diff[-64:, -64:]):
        assert corner.max() == 0
    # outside the lower face (jaw box with a margin) nothing changes: collar, suit, flag
    x0, y0, x1, y1 = face.face_box
    outside = np.ones_like(diff, bool)
    outside[y0 - 5: y1 + 5, x0 - 5: x1 + 5] = False
    assert diff[outside].max() <= 2


def test_half_open_lies_between(face):
    ys, xs = _mouth_box(face)
    closed = face.render(0.0)[ys, xs]
    half = _diff(closed, face.render(0.5)[ys, xs]).mean()
    full = _diff(closed, face.render(1.0)[ys, xs]).mean()
    assert 0.2 * full < half < full


def test_blink_changes_the_eyes_only(face):
    open_eyes, closed = face.render(0.0, blink=0.0), face.render(0.0, blink=1.0)
    diff = _diff(open_eyes, closed)
    eye = face.points[demo.EYES[0]["upper"] + demo.EYES[0]["lower"]]
    (x0, y0), (x1, y1) = eye.min(axis=0).astype(int), eye.max(axis=0).astype(int)
    assert diff[y0:y1 + 1, x0:x1 + 1].mean() > 15
    ys, xs = _mouth_box(face)
    assert diff[ys, xs].max() == 0


def test_head_motion_moves_the_frame_without_black_edges(face):
    moved = face.render(0.0, dx=3.0, dy=-2.0, angle=1.5)
    assert _diff(moved, face.image).mean() > 5
    def black(img: np.ndarray) -> float:
        return float((img.max(axis=-1) < 8).mean())

    assert black(moved) <= black(face.image) + 0.002  # edges reflected, not padded black


def test_visemes_close_for_bilabials_and_open_for_open_vowels():
    assert demo.viseme_opening("p") == demo.viseme_opening("m") == 0.0
    assert demo.viseme_opening("_:") == 0.0
    assert demo.viseme_opening("'A:") > demo.viseme_opening("'i:") > demo.viseme_opening("f")
    assert 0 < demo.viseme_opening("t") < demo.viseme_opening("'a")


def test_opening_track_is_closed_in_silence():
    audio = np.zeros(16_000, np.float32)
    track = demo.opening_track([(0.2, "'A:"), (0.5, "_")], audio, 16_000, n_frames=25)
    assert track.shape == (25,) and track.dtype == np.float32
    assert track.max() == 0.0  # phonemes without sound do not open the mouth


def test_plan_is_deterministic_per_seed():
    a = demo.plan_demo(SECONDS, seed=0, lead_silence=LEAD)
    b = demo.plan_demo(SECONDS, seed=0, lead_silence=LEAD)
    c = demo.plan_demo(SECONDS, seed=1, lead_silence=LEAD)
    assert np.array_equal(a.opening, b.opening) and np.array_equal(a.motion, b.motion)
    assert np.array_equal(a.script.audio, b.script.audio)
    assert not np.array_equal(a.opening, c.opening)
    assert not set(a.heldout.sentences) & set(demo.SENTENCES)


def test_too_short_demo_says_what_to_change():
    with pytest.raises(ValueError, match="raise seconds"):
        demo.plan_demo(seconds=3.0, lead_silence=1.5)


def test_make_demo_writes_video_and_ground_truth(made):
    info = media.probe(made.video)
    n = round(SECONDS * demo.FPS)
    assert info.has_audio and info.width == info.height == 512
    assert abs(info.duration - SECONDS) <= 1 / demo.FPS
    assert info.n_frames_at(demo.FPS) == n
    opening = np.load(made.mouth_open)
    assert opening.shape == (n,) and opening.dtype == np.float32
    assert opening.min() >= 0 and opening.max() <= 1

    lead = int(LEAD * demo.FPS) - 2
    assert opening[:lead].max() < 0.02  # closed during the leading silence
    speech = opening[lead:]
    assert speech.max() > 0.5 and speech.std() > 0.1

    audio = media.load_audio(made.video)
    hop = len(audio) // n
    rms = np.sqrt([np.mean(audio[i * hop:(i + 1) * hop] ** 2) for i in range(n)])
    assert np.corrcoef(opening, rms)[0, 1] > 0.3

    assert np.array_equal(opening, demo.plan_demo(SECONDS, 0, LEAD).opening)


def test_make_demo_writes_heldout_audio_and_metadata(made):
    heldout = media.load_audio(made.heldout_wav)
    assert abs(len(heldout) / 16_000 - demo.HELDOUT_SECONDS) < 0.01
    track = np.load(made.heldout_mouth_open)
    assert track.shape == (round(demo.HELDOUT_SECONDS * demo.FPS),)
    assert track[:10].max() < 0.02 and track.max() > 0.5
    meta = json.loads(made.meta.read_text())
    assert meta["params"]["seed"] == 0 and meta["params"]["seconds"] == SECONDS
    assert meta["sentences"] and not set(meta["sentences"]) & set(meta["heldout_sentences"])
    x0, y0, x1, y1 = meta["face_box"]
    assert 0 < x0 < x1 < 512 and 0 < y0 < y1 < 512


def test_make_demo_reuses_a_finished_demo(made):
    before = made.video.stat().st_mtime_ns
    again = demo.make_demo(made.folder.parent, seconds=SECONDS, seed=0, lead_silence=LEAD)
    assert again == made and made.video.stat().st_mtime_ns == before
