import math
import shutil

import cv2
import numpy as np
import pytest
from helpers import moving_face_frames

from synctalk_lib import facemesh, landmarks
from synctalk_lib.config import LandmarkConfig


def _needs(*modules: str) -> None:
    for name in modules:
        pytest.importorskip(name, reason=f"{name} is not installed")


def _distance_in_face_widths(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-point distance over the reference's face width: (..., 468, 2) -> (..., 468)."""
    width = landmarks.face_width(reference, landmarks.MEDIAPIPE)[..., None]
    return np.linalg.norm(points - reference, axis=-1) / width


def test_facemesh_points_match_mediapipe_on_the_astronaut(astronaut):
    _needs("ai_edge_litert", "mediapipe")
    ours = landmarks.make_detector(LandmarkConfig(backend="facemesh"), video=False)
    theirs = landmarks.make_detector(LandmarkConfig(backend="mediapipe"), video=False)
    try:
        pts, ref = ours(astronaut), theirs(astronaut)
    finally:
        ours.close()
        theirs.close()
    assert pts is not None and pts.shape == (468, 2) and pts.dtype == np.float32
    d = _distance_in_face_widths(pts, ref)
    # the same models on the same crop: measured 0.007 % of the face width on average
    assert d.mean() < 0.001 and d.max() < 0.005


def test_facemesh_tracks_video_like_mediapipe_and_detects_only_when_it_lost_the_face(
        astronaut, monkeypatch):
    _needs("ai_edge_litert", "mediapipe")
    frames = list(moving_face_frames(astronaut, 12, blank={6}))
    detections = []
    real_detect = facemesh.FaceMesh.detect
    monkeypatch.setattr(facemesh.FaceMesh, "detect",
                        lambda self, rgb: detections.append(1) or real_detect(self, rgb))
    ours = landmarks.make_detector(LandmarkConfig(backend="facemesh"), video=True)
    theirs = landmarks.make_detector(LandmarkConfig(backend="mediapipe"), video=True)
    try:
        pts = [ours(f) for f in frames]
        ref = [theirs(f) for f in frames]
    finally:
        ours.close()
        theirs.close()
    assert pts[6] is None and ref[6] is None  # the grey frame
    found = [i for i in range(12) if i != 6]
    assert all(pts[i] is not None for i in found)
    # frame 0, then the grey frame (tracking fails, the detector finds nothing) and frame 7
    assert len(detections) == 3
    for i in found:
        if ref[i] is not None:
            assert _distance_in_face_widths(pts[i], ref[i]).mean() < 0.002


def test_no_face_gives_none():
    _needs("ai_edge_litert")
    mesh = facemesh.FaceMesh(video=True)
    grey = np.full((256, 256, 3), 128, np.uint8)
    assert mesh(grey) is None and mesh(grey) is None


def test_a_changed_model_file_is_refused(tmp_path):
    shutil.copytree(facemesh.MODEL_DIR, tmp_path, dirs_exist_ok=True)
    model = tmp_path / facemesh.LANDMARK_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(facemesh.FaceMeshError, match="sha256 .* expected 1055cb9d"):
        facemesh.FaceMesh(model_dir=tmp_path)
    (tmp_path / facemesh.DETECTOR_FILE).unlink()
    with pytest.raises(facemesh.FaceMeshError, match="cannot be read"):
        facemesh.FaceMesh(model_dir=tmp_path)


def test_shipped_model_files_have_the_recorded_digests():
    for name in facemesh.MODEL_FILES:
        assert facemesh.read_model(name)[4:8] == b"TFL3"  # a TFLite flatbuffer


def test_region_crop_and_its_inverse_agree():
    """A pixel of the crop shows the image point that `Roi.to_image` gives for it, so model
    outputs land where they were seen."""
    ys, xs = np.mgrid[0:256, 0:256]
    image = np.dstack([xs, ys, np.zeros_like(xs)]).astype(np.uint8)  # R = x, G = y
    roi = facemesh.Roi(cx=131.0, cy=120.0, side=90.0, angle=math.radians(25))
    patch = roi.crop(image, 64, cv2.BORDER_REPLICATE)
    uv = np.array([[10, 50], [32, 32], [60, 5]], np.float64)
    back = roi.to_image(uv / 64)
    seen = patch[uv[:, 1].astype(int), uv[:, 0].astype(int), :2].astype(np.float64)
    np.testing.assert_allclose(back, seen, atol=1.0)  # uint8 rounding


def test_best_face_averages_boxes_that_overlap_the_top_one_by_score():
    raw = np.zeros((len(facemesh.ANCHORS), 16), np.float32)
    logits = np.full((len(facemesh.ANCHORS), 1), -10, np.float32)
    a = 100  # an anchor near the top left; its neighbour overlaps it, anchor 890 does not
    for i, dx, logit in ((a, 0.0, 3.0), (a + 1, 4.0, 1.0), (890, 0.0, 2.0)):
        raw[i, :4] = (dx, 0, 30, 30)  # centre offset and size in input pixels
        logits[i] = logit
    box, keypoints, score = facemesh.best_face(raw, logits, min_score=0.5)
    s_top, s_next = 1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1))
    anchors = facemesh.ANCHORS
    centre_x = (s_top * anchors[a, 0] + s_next * (anchors[a + 1, 0] + 4 / 128)) / (
        s_top + s_next)
    assert (box[0] + box[2]) / 2 == pytest.approx(centre_x, abs=1e-6)
    assert box[2] - box[0] == pytest.approx(30 / 128, abs=1e-6)
    assert score == pytest.approx(s_top)
    assert keypoints.shape == (6, 2)  # eyes, nose, mouth, ears: here all at the anchor
    np.testing.assert_allclose(keypoints[0], anchors[a], atol=1e-6)
    assert facemesh.best_face(raw, logits, min_score=0.99) is None


def test_anchors_follow_the_detector_layout():
    anchors = facemesh.ssd_anchors()
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[:2], [[0.5 / 16, 0.5 / 16]] * 2)  # stride 8, 2 per cell
    np.testing.assert_allclose(anchors[512:518], [[0.5 / 8, 0.5 / 8]] * 6)  # stride 16, 6
    np.testing.assert_allclose(anchors[-1], [7.5 / 8, 7.5 / 8])


def test_auto_backend_prefers_facemesh_and_unknown_names_list_the_choices():
    _needs("ai_edge_litert")
    assert landmarks.resolve_backend("auto") == "facemesh"
    assert landmarks.resolve_backend("mediapipe") == "mediapipe"
    with pytest.raises(landmarks.LandmarkError, match="'facemesh'"):
        landmarks.resolve_backend("dlib")
