import cv2
import numpy as np
import pytest

from synctalk_lib import crop, landmarks
from synctalk_lib.config import get_config

CFG = get_config("tiny").crop


@pytest.fixture(scope="module")
def face_points(astronaut):
    pts = landmarks.detect_image(astronaut)
    assert pts is not None
    return pts


def test_box_is_square_lower_face(face_points):
    box = crop.boxes_from_landmarks(face_points, landmarks.MEDIAPIPE)
    x0, y0, x1, y1 = box
    assert x1 - x0 == pytest.approx(y1 - y0)
    s = landmarks.MEDIAPIPE
    chin_y = face_points[s.chin, 1]
    mouth = face_points[[s.lip_top, s.lip_bottom, s.mouth_left, s.mouth_right]]
    assert y0 < mouth[:, 1].min() and mouth[:, 1].max() < y1
    assert x0 < mouth[:, 0].min() and mouth[:, 0].max() < x1
    assert chin_y < y1 - 0.05 * (x1 - x0), "the chin must sit inside the box with margin"


def test_integer_box_crop_matches_slice_and_resize(astronaut):
    box = np.array([179, 116, 271, 208], np.float32)
    got = crop.crop_face(astronaut, box, CFG.size)
    ref = cv2.resize(astronaut[116:208, 179:271], (CFG.size, CFG.size))
    assert got.shape == (328, 328, 3)
    assert np.abs(got.astype(int) - ref).mean() < 0.5


def test_crop_to_320_and_paste_back_leaves_the_rest_of_the_frame_unchanged(astronaut):
    box = np.array([180.3, 115.7, 272.1, 207.5], np.float32)
    c = crop.crop_face(astronaut, box, CFG.size)
    patch = crop.inner(c, CFG)
    assert patch.shape == (CFG.inner, CFG.inner, 3)
    generated = crop.with_inner(c, 255 - patch, CFG)  # a very different "generation"
    out = crop.paste_back(astronaut, generated, box, crop.paste_mask(CFG))
    changed = np.any(out != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed.any()
    # only pixels inside the box may change
    assert xs.min() >= np.floor(box[0]) and xs.max() <= np.ceil(box[2])
    assert ys.min() >= np.floor(box[1]) and ys.max() <= np.ceil(box[3])
    # pasting the unmodified crop back reproduces the frame closely
    same = crop.paste_back(astronaut, c, box, crop.paste_mask(CFG))
    assert np.abs(same.astype(int) - astronaut).mean() < 0.1


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(float) - b) ** 2)))


def test_an_unchanged_crop_pasted_back_keeps_the_face_sharp(astronaut):
    """Frame -> 328 crop -> frame loses little detail, so a pasted region is not softer than
    the face around it (bicubic resampling: 48.7 dB here; bilinear gave 45.0)."""
    box = np.array([180.3, 115.7, 272.1, 207.5])
    out = crop.paste_back(astronaut, crop.crop_face(astronaut, box, CFG.size), box)
    x0, y0, x1, y1 = (int(v) for v in box)
    inside = (slice(y0 + 20, y1 - 20), slice(x0 + 20, x1 - 20))
    assert _psnr(out[inside], astronaut[inside]) > 47.0


def test_paste_mask_covers_mask_rect_and_fades_to_zero():
    alpha = crop.paste_mask(CFG)
    x0, y0, x1, y1 = (v + CFG.ring for v in crop.mask_rect(CFG))
    assert alpha.shape == (CFG.size, CFG.size)
    assert alpha[(y0 + y1) // 2, (x0 + x1) // 2] == 1.0
    assert alpha[: CFG.ring + 1].max() == 0 and alpha[:, : CFG.ring + 1].max() == 0
    assert 0 < alpha[(y0 + y1) // 2, x0 + 3] < 1


def test_mask_rect_matches_synctalk_at_320():
    assert crop.mask_rect(CFG) == (5, 5, 315, 310)
    masked = crop.mask_lower_face(np.full((320, 320, 3), 200, np.uint8), CFG)
    assert masked[100, 100].sum() == 0 and masked[2, 2].sum() == 600 and masked[315, 100].sum()


def test_large_faces_are_area_averaged_not_aliased(astronaut):
    big = cv2.resize(astronaut, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    box = np.array([179, 116, 271, 208], np.float32)
    small = crop.crop_face(astronaut, box, CFG.size)
    large = crop.crop_face(big, box * 4, CFG.size)
    assert np.abs(small.astype(int) - large).mean() < 4


def test_smoothing_removes_jitter_but_follows_motion():
    rng = np.random.default_rng(0)
    t = np.arange(200)
    x = 100 + 20 * np.sin(t / 40)  # slow head motion
    boxes = np.stack([x, 50 + 0 * t, x + 100, 150 + 0 * t], 1).astype(np.float32)
    noisy = boxes + rng.normal(0, 1.5, (200, 1)).astype(np.float32) * [1, 1, 1, 1]
    smooth = crop.smooth_boxes(noisy, 7)
    jitter = lambda b: np.abs(np.diff(b[:, 0], 2)).mean()
    assert jitter(smooth) < 0.3 * jitter(noisy)
    assert np.abs(smooth[:, 0] - boxes[:, 0]).max() < 2.5
    np.testing.assert_allclose(smooth[:, 2] - smooth[:, 0], smooth[:, 3] - smooth[:, 1],
                               atol=1e-3)


def test_degenerate_box_is_an_error(astronaut):
    with pytest.raises(ValueError, match="no area"):
        crop.crop_face(astronaut, np.array([10, 10, 10, 10], np.float32), 328)


def test_lower_face_mask_keeps_nose_and_collar_real_and_covers_mouth_and_chin(face_points):
    s = landmarks.MEDIAPIPE
    box = crop.boxes_from_landmarks(face_points, s)
    alpha = crop.lower_face_mask(face_points, box, s, CFG, feather=0.06, chin_drop=0.06)
    assert alpha.shape == (CFG.size, CFG.size)
    assert alpha.min() >= 0 and alpha.max() == 1.0
    assert np.all(alpha <= crop.paste_mask(CFG, 0.06) + 1e-6), "never outside the rectangle"
    local = (face_points - box[:2]) * CFG.size / (box[2] - box[0])

    def at(p, dy=0.0):
        return alpha[int(p[1] + dy), int(p[0])]

    assert at(local[s.lip_top]) == 1 and at(local[s.lip_bottom]) == 1
    assert at(local[s.chin], -0.04 * CFG.size) == 1, "the chin is replaced"
    assert at(local[s.nose], -0.03 * CFG.size) == 0, "the nose stays real"
    below = local[s.jaw[3]] + (0, 0.2 * CFG.size)  # under the jaw's side: neck / collar
    assert below[1] < CFG.size and at(below) == 0
    mid_y = (local[s.lip_top, 1] + local[s.chin, 1]) / 2
    jaw = local[list(s.jaw)]
    cheek = jaw[np.argmin(np.abs(jaw[:, 1] - mid_y) + 1e3 * (jaw[:, 0] > local[s.chin, 0]))]
    assert at(cheek - (0.02 * CFG.size, 0)) == 0, "beside the face (hair, background) stays real"
    assert alpha[int(mid_y), int(cheek[0] + 0.1 * CFG.size)] == 1, "the cheek inside is replaced"
    faded = alpha[(alpha > 0) & (alpha < 1)]
    assert faded.size > 4 * CFG.size, "the border fades instead of cutting"


def test_lower_face_mask_needs_a_jaw_contour(face_points):
    box = crop.boxes_from_landmarks(face_points, landmarks.MEDIAPIPE)
    assert crop.lower_face_mask(face_points, box, landmarks.SYNCTALK110, CFG) is None
    missing = np.full_like(face_points, np.nan)
    assert crop.lower_face_mask(missing, box, landmarks.MEDIAPIPE, CFG) is None
