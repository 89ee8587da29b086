"""Lower-face crop geometry: boxes from landmarks, temporal smoothing, crop and paste-back.

The one crop path for dataset, inference and preview, so training and inference cannot
drift (docs/design.md §2). A box is (x0, y0, x1, y1) in continuous pixel coordinates (pixel i
spans [i, i + 1)), always square: width from cheek to cheek, top at the nose bridge,
height = width, so it holds nose, mouth and chin. Crops use a sub-pixel affine warp: a box
that moves by a fraction of a pixel moves the crop by that fraction instead of jumping by
whole pixels as integer slicing does. Crop → `size` (328) → inner patch (320) → paste-back
is the model's geometry; the ring of `cfg.ring` pixels hides the generator's border.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.ndimage

from .config import CropConfig
from .landmarks import Scheme

# Bilinear sampling aliases when it shrinks by more than ~2x; pre-shrink with area averaging.
_MAX_WARP_SHRINK = 2.0


def boxes_from_landmarks(points: np.ndarray, scheme: Scheme) -> np.ndarray:
    """SyncTalk_2D's crop rule: x from the cheek anchors, y from the nose anchor, square.

    points: (..., N, 2) float pixel coords. Returns (..., 4) float32 boxes (x0, y0, x1, y1).
    """
    x0 = points[..., scheme.left, 0]
    x1 = points[..., scheme.right, 0]
    y0 = points[..., scheme.top, 1]
    return np.stack([x0, y0, x1, y0 + (x1 - x0)], axis=-1).astype(np.float32)


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Remove frame-to-frame jitter: jitter in boxes becomes jitter of the whole lower face.

    Centre and side are smoothed separately: a median of 3 drops single-frame outliers, then
    a centred moving average of `window` frames; the side, which changes slowly, gets twice
    the window. boxes: (T, 4). Returns (T, 4) float32 square boxes.
    """
    if window <= 1 or len(boxes) < 3:
        return boxes.astype(np.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (T, 2)
    side = boxes[:, 2] - boxes[:, 0]  # (T,)
    centre = scipy.ndimage.median_filter(centre, size=(3, 1), mode="nearest")
    side = scipy.ndimage.median_filter(side, size=3, mode="nearest")
    centre = scipy.ndimage.uniform_filter1d(centre, size=window, axis=0, mode="nearest")
    side = scipy.ndimage.uniform_filter1d(side, size=2 * window + 1, mode="nearest")
    half = side[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)


def _frame_to_crop(x0: float, y0: float, kx: float, ky: float) -> np.ndarray:
    """2x3 affine from frame pixel indices to crop pixel indices.

    Crop pixel c has its centre at frame position x0 + (c + 0.5) * kx (kx = frame pixels per
    crop pixel), the convention of cv2.resize, so integer boxes crop exactly as slicing +
    resize would.
    """
    return np.array([[1 / kx, 0.0, (0.5 - x0) / kx - 0.5],
                     [0.0, 1 / ky, (0.5 - y0) / ky - 0.5]], np.float64)


def crop_face(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut the box out of the frame and resample it to size×size.

    frame: (H, W, 3) uint8 RGB; box: (4,) float; returns (size, size, 3) uint8 RGB. Parts of
    the box outside the frame repeat the border pixels.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 - x0 <= 1 or y1 - y0 <= 1:
        raise ValueError(f"crop box {tuple(box)} has no area")
    source = frame
    kx, ky = (x1 - x0) / size, (y1 - y0) / size
    if max(kx, ky) > _MAX_WARP_SHRINK:
        h, w = frame.shape[:2]
        rx0, ry0 = min(max(int(x0) - 2, 0), w - 1), min(max(int(y0) - 2, 0), h - 1)
        rx1, ry1 = max(min(int(np.ceil(x1)) + 2, w), rx0 + 1), max(min(int(np.ceil(y1)) + 2, h), ry0 + 1)
        factor = int(max(kx, ky))
        region = frame[ry0:ry1, rx0:rx1]
        nw, nh = max(region.shape[1] // factor, 1), max(region.shape[0] // factor, 1)
        source = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
        fx, fy = region.shape[1] / nw, region.shape[0] / nh
        x0, y0 = (x0 - rx0) / fx, (y0 - ry0) / fy
        kx, ky = kx / fx, ky / fy
    return cv2.warpAffine(source, _frame_to_crop(x0, y0, kx, ky), (size, size),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def inner(crop: np.ndarray, cfg: CropConfig) -> np.ndarray:
    """The patch the model sees: (size, size, ...) -> (inner, inner, ...) without the ring."""
    return crop[cfg.ring: cfg.size - cfg.ring, cfg.ring: cfg.size - cfg.ring]


def with_inner(crop: np.ndarray, patch: np.ndarray, cfg: CropConfig) -> np.ndarray:
    """Put a generated inner patch back into (a copy of) its crop; the ring keeps the input."""
    out = crop.copy()
    out[cfg.ring: cfg.size - cfg.ring, cfg.ring: cfg.size - cfg.ring] = patch
    return out


def mask_rect(cfg: CropConfig, size: int | None = None) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the black rectangle in pixels of a `size` patch (default: inner).

    (5, 5, 315, 310) at 320, as SyncTalk_2D; scaled for smaller model patches.
    """
    n = size or cfg.inner
    return (round(cfg.mask_x0 * n), round(cfg.mask_y0 * n),
            round(cfg.mask_x1 * n), round(cfg.mask_y1 * n))


def mask_lower_face(patch: np.ndarray, cfg: CropConfig) -> np.ndarray:
    """The generator's second input: the inner patch with the mouth area blacked out."""
    x0, y0, x1, y1 = mask_rect(cfg, patch.shape[0])
    out = patch.copy()
    out[y0:y1, x0:x1] = 0
    return out


def paste_mask(cfg: CropConfig, feather: float = 0.06) -> np.ndarray:
    """Blend weights in crop pixels: 1 over the generated area, fading to 0 at its border.

    The generated area is the masked rectangle inside the inner patch; `feather` (fraction of
    the crop side) is the width of the fade, which hides colour drift that a hard rectangle
    (SyncTalk_2D) shows as a seam. Returns (size, size) float32 in [0, 1].
    """
    x0, y0, x1, y1 = (v + cfg.ring for v in mask_rect(cfg))
    fade = max(feather * cfg.size, 1.0)
    idx = np.arange(cfg.size, dtype=np.float32) + 0.5
    ramp_x = np.clip(np.minimum(idx - x0, x1 - idx) / fade, 0, 1)
    ramp_y = np.clip(np.minimum(idx - y0, y1 - idx) / fade, 0, 1)
    return np.outer(ramp_y, ramp_x).astype(np.float32)


def lower_face_mask(points: np.ndarray, box: np.ndarray, scheme: Scheme, cfg: CropConfig,
                    feather: float = 0.06, chin_drop: float = 0.06,
                    side_margin: float = 0.35) -> np.ndarray | None:
    """Blend weights of one frame that replace only its mouth and jaw, inside `paste_mask`.

    Why: the generator also redraws the neck, collar, cheeks and whatever is beside the face
    (hair, background), which move with the head and not with speech; on a real person those
    are where a briefly trained model leaves blotches. The region is this frame's own jaw
    contour, so the face's outline and everything beyond it stay real. Between the mouth
    corners it reaches `chin_drop` (fraction of the crop side) lower, so a chin that the
    generated mouth lowers further than the template's stays inside. Sideways it ends
    `side_margin` mouth widths beyond the mouth corners, short of the cheeks' outline, where
    an imperfect generator blotches skin against hair. It is cut at the top a quarter of the
    way from the nose tip down to the lips (the nostrils stay real) and fades from 0 at its
    border to 1 over `feather` inwards. points: (N, 2) landmarks in frame pixels; box: (4,)
    their crop box. Returns (size, size) float32, or None when the landmark scheme has no jaw
    contour or the frame has no landmarks (then use `paste_mask`).
    """
    if not scheme.has_jaw or not np.all(np.isfinite(points)):
        return None
    size = cfg.size
    x0, y0, x1, _ = (float(v) for v in box)
    local = (points - (x0, y0)) * (size / (x1 - x0))  # crop pixels
    jaw = local[list(scheme.jaw)]
    nose, lip = local[scheme.nose, 1], local[scheme.lip_top, 1]
    top = nose + 0.25 * (lip - nose)
    bottom = jaw[:, 1].max()
    stretched = jaw.copy()  # from the top cut down, so the chin moves by chin_drop
    stretched[:, 1] = top + (jaw[:, 1] - top) * (1 + chin_drop * size / max(bottom - top, 1.0))
    region, lower = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    for img, poly in ((region, jaw), (lower, stretched)):  # 2 bits of sub-pixel precision
        cv2.fillPoly(img, [np.round(poly * 4).astype(np.int32)], 1, lineType=cv2.LINE_8,
                     shift=2)
    if scheme.mouth_left is not None and scheme.mouth_right is not None:
        # only under the mouth: the chin drops, the cheeks' outline does not move
        xs = sorted((local[scheme.mouth_left, 0], local[scheme.mouth_right, 0]))
        lower[:, : max(int(np.floor(xs[0])), 0)] = 0
        lower[:, max(int(np.ceil(xs[1])) + 1, 0):] = 0
        region |= lower
        # and not out to the face's sides, where a generator meets hair and background
        reach = side_margin * (xs[1] - xs[0])
        region[:, : max(int(np.floor(xs[0] - reach)), 0)] = 0
        region[:, max(int(np.ceil(xs[1] + reach)) + 1, 0):] = 0
    else:
        region |= lower
    region[: max(int(np.ceil(top)), 0)] = 0
    fade = max(feather * size, 1.0)
    inside = cv2.distanceTransform(region, cv2.DIST_L2, 5)
    return (np.clip(inside / fade, 0, 1) * paste_mask(cfg, feather)).astype(np.float32)


def paste_region(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels `paste_back` may change in a (width, height) frame: the
    box grown by one pixel (bicubic reach), clipped to the frame; empty if it lies outside."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0),
            min(int(np.ceil(x1)) + 1, width), min(int(np.ceil(y1)) + 1, height))


def paste_back(
    frame: np.ndarray, crop: np.ndarray, box: np.ndarray, alpha: np.ndarray | None = None
) -> np.ndarray:
    """Blend a (generated) crop back into its frame; the inverse of `crop_face`.

    frame: (H, W, 3) uint8 RGB; crop: (S, S, 3) uint8 RGB; box: the box it was cut from;
    alpha: (S, S) float32 blend weights in crop pixels (default: no feathering, the whole
    crop). Pixels whose warped weight is 0 keep their exact input values. Returns a new frame.
    The crop is resampled bicubically: a face pasted back through the 328-px crop stays
    sharper than with bilinear resampling (an unchanged crop of a real clip came back at
    52 dB PSNR against 49), so the pasted region is not softer than the real face around it.
    """
    size = crop.shape[0]
    if alpha is None:
        alpha = np.ones((size, size), np.float32)
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    rx0, ry0, rx1, ry1 = paste_region(box, w, h)
    out = frame.copy()
    if rx1 <= rx0 or ry1 <= ry0:
        return out
    matrix = _frame_to_crop(x0 - rx0, y0 - ry0, (x1 - x0) / size, (y1 - y0) / size)
    roi = (rx1 - rx0, ry1 - ry0)
    colour = cv2.warpAffine(crop, matrix, roi, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(alpha, matrix, roi, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)[..., None]
    region = out[ry0:ry1, rx0:rx1].astype(np.float32)
    blended = region + weight * (colour.astype(np.float32) - region)
    out[ry0:ry1, rx0:rx1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
