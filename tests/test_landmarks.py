import numpy as np
import pytest

from synctalk_lib import landmarks
from synctalk_lib.config import LandmarkConfig


def test_mediapipe_points_fall_on_the_astronauts_face(astronaut):
    pts = landmarks.detect_image(astronaut)
    assert pts is not None and pts.shape == (468, 2)
    s = landmarks.MEDIAPIPE
    # the face of scikit-image's astronaut lies within x 150..300, y 50..220 of the photo
    assert 150 < pts[:, 0].min() and pts[:, 0].max() < 300
    assert 50 < pts[:, 1].min() and pts[:, 1].max() < 220
    nose, chin = pts[s.nose], pts[s.chin]
    assert pts[s.left, 0] < nose[0] < pts[s.right, 0]
    assert nose[1] < pts[s.lip_top, 1] < pts[s.lip_bottom, 1] < chin[1]
    assert 60 < landmarks.face_width(pts, s) < 130


def test_no_face_gives_none():
    grey = np.full((256, 256, 3), 128, np.uint8)
    assert landmarks.detect_image(grey) is None


def test_lms_round_trip_and_legacy_anchor_rows(tmp_path, astronaut):
    pts = landmarks.detect_image(astronaut)
    path = tmp_path / "0.lms"
    landmarks.write_lms(path, pts, landmarks.MEDIAPIPE)
    back, scheme = landmarks.read_lms(path)
    assert scheme is landmarks.MEDIAPIPE
    np.testing.assert_allclose(back, pts, atol=0.01)
    # a SyncTalk_2D tool reads rows 1, 31, 52 as the crop anchors
    legacy = np.loadtxt(path)
    s = landmarks.MEDIAPIPE
    assert legacy[1, 0] == pytest.approx(pts[s.left, 0], abs=0.01)
    assert legacy[31, 0] == pytest.approx(pts[s.right, 0], abs=0.01)
    assert legacy[52, 1] == pytest.approx(pts[s.top, 1], abs=0.01)


def test_synctalk_110_point_files_are_read(tmp_path):
    pts = np.random.default_rng(0).uniform(0, 500, (110, 2)).astype(np.float32)
    np.savetxt(tmp_path / "3.lms", pts, fmt="%.3f")
    back, scheme = landmarks.read_lms(tmp_path / "3.lms")
    assert scheme is landmarks.SYNCTALK110 and back.shape == (110, 2)
    assert np.isnan(landmarks.mouth_opening(back, scheme))


def test_bad_lms_and_unknown_backend_are_clear_errors(tmp_path):
    (tmp_path / "bad.lms").write_text("1 2 3\n")
    with pytest.raises(landmarks.LandmarkError, match="x y"):
        landmarks.read_lms(tmp_path / "bad.lms")
    with pytest.raises(landmarks.LandmarkError, match="mediapipe"):
        landmarks.make_detector(LandmarkConfig(backend="dlib"))


def test_face_alignment_without_weights_says_where_to_put_them(tmp_path):
    cfg = LandmarkConfig(backend="face_alignment", face_alignment_dir=str(tmp_path))
    with pytest.raises(landmarks.LandmarkError, match="never downloads"):
        landmarks.make_detector(cfg)


def test_a_cli_run_shows_no_native_log_chatter(face_video, tmp_path):
    """MediaPipe's C++ side printed absl `W0000 …` and TFLite `INFO: …` lines on every run."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "synctalk_lib", "preprocess", "--name", "quiet", "--root",
         str(tmp_path), "--video", str(face_video), "--preset", "tiny"],
        check=False, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "preprocessed 50 frames" in proc.stdout
    chatter = [line for line in proc.stderr.splitlines()
               if line.startswith(("W0000", "I0000", "INFO: Created", "WARNING: All log"))]
    assert not chatter, chatter

