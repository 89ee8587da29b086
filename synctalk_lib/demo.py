"""A talking-head demo clip made on the spot from assets inside pip packages.

Nothing is downloaded: the face is scikit-image's `astronaut` photo (Eileen Collins, 512x512),
the voice is espeak-ng (`tts`). Recipe (docs/design.md §11):

1. Face Mesh landmarks on the still photo (`landmarks.detect_image`).
2. A piecewise-affine warp over a triangulation of those points plus fixed anchors: the lower
   lip, chin and lower jaw contour move down by `opening x JAW_DROP x face width`, while upper
   lip, nose, eyes and a ring of anchors 1.25 face widths out stay put; the rest of the lower
   face follows smoothly (harmonic interpolation on the mesh, so no triangle folds). Only the
   face layer moves: the chin slides over the neck, the collar and background never move. The
   warp is linear in `opening`, so backward maps are computed once for a few levels and
   blended per frame (`cv2.remap` on the face region only, not skimage's slow
   PiecewiseAffineTransform): a frame renders in ~1.5 ms.
3. A soft-edged, shaded mouth cavity opens between the upper teeth (the photo's own smile) and
   the moving lower lip; blinks paint a skin-coloured upper lid with a lash line.
4. `opening` per frame comes from espeak's phoneme events mapped to visemes, smoothed with a
   short attack/release and gated by the audio envelope; a slow similarity transform moves
   the whole frame a few pixels. The per-frame `opening` is saved as ground truth.

Everything is deterministic for a given seed (sentences, pauses, blinks, head motion).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib.tri as mtri
import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve
from scipy.spatial import Delaunay

from . import files, landmarks, tts
from .progress import progress_bar

log = logging.getLogger(__name__)

DEMO_VERSION = 3  # bump when the output changes, so cached demos are rebuilt
FPS = 25
SAMPLE_RATE = 16_000
HELDOUT_SECONDS = 18.0
HELDOUT_LEAD_S = 2.0  # at most this much silence at each end of the held-out audio
WPM = 155
PAUSE_RANGE = (0.3, 0.8)  # seconds of silence between sentences

# --------------------------------------------------------------------------- face geometry

# MediaPipe Face Mesh indices (lists, for numpy indexing), each ordered from image left to right
UPPER_INNER_LIP = list(landmarks.MEDIAPIPE_UPPER_INNER_LIP)
LOWER_INNER_LIP = list(landmarks.MEDIAPIPE_LOWER_INNER_LIP)
UPPER_OUTER_LIP = list(landmarks.MEDIAPIPE_UPPER_OUTER_LIP)
LOWER_OUTER_LIP = list(landmarks.MEDIAPIPE_LOWER_OUTER_LIP)
LOWER_JAW = list(landmarks.MEDIAPIPE.jaw)  # face oval from one ear down round the chin to the other
# eyes: upper lid and lower lid, each from corner to corner
EYES = [
    {"upper": [33, 246, 161, 160, 159, 158, 157, 173, 133],
     "lower": [33, 7, 163, 144, 145, 153, 154, 155, 133]},
    {"upper": [362, 398, 384, 385, 386, 387, 388, 466, 263],
     "lower": [362, 382, 381, 380, 374, 373, 390, 249, 263]},
]
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
             400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54,
             103, 67, 109]
FACE_LEFT, FACE_RIGHT, NOSE_BRIDGE = 234, 454, 195  # crop anchors (docs/design.md §10)

JAW_DROP = 0.15  # lower-lip travel at opening 1 (face widths); real lips span ~0.1 fw
CORNER_DROP = 0.3  # mouth corners travel this share of the lower lip's drop
JAW_SIDE_DROP = 0.3  # jaw contour at the cheeks travels this share (the jaw hinges near the ear)
JAW_RAMP = 0.15  # face widths below the mouth-corner line where the jaw contour drops fully
ABOVE_MOUTH_PX = 1.5  # vertices this far above the mouth-corner line are pinned (skull)
JAW_BAND = 0.20  # fixed anchors this far (face widths) outside the jaw keep the warp local
FACE_GROW = 2  # px the face layer extends beyond the Face Mesh oval (it sits on the jaw edge)
RING_RADIUS = 1.25  # fixed anchor ring around the face, in face widths
RING_POINTS = 32
TEETH_EDGE = 1.0  # px: the cavity opens this far above the lower inner lip (bottom of teeth)
CORNER_ZONE = (0.55, 0.95)  # |x| / half mouth width where the cavity climbs to the upper lip
LID_SKIN_ROWS = (4, 7)  # lid colour is sampled this many px above the upper lid, per column
LID_COVER = 1.5  # px the painted lid reaches above the upper lid, hiding the photo's lash line
LID_SHADE = 0.86  # a lid sits in the brow's shadow: a bit darker than the skin sampled above
LASH_WIDTH = 1.6  # px, dark line along the closing lid's edge
LASH_ALPHA = 0.8
LASH = np.array([52, 36, 30], np.float32)
WARP_LEVELS = 17  # precomputed backward maps per warp, blended linearly between levels

# cavity shading, RGB: deep shadow under the teeth, dark red-brown, tongue at the bottom
CAVITY_TOP = np.array([34, 14, 11], np.float32)
CAVITY_MID = np.array([88, 34, 26], np.float32)
CAVITY_TONGUE = np.array([152, 72, 62], np.float32)
LOWER_TEETH = np.array([168, 150, 136], np.float32)


class TalkingFace:
    """A still face photo that can open its mouth, blink and move its head.

    Build once (triangulation and warp maps take ~0.5 s), then `render` any number of frames.
    """

    def __init__(self, image: np.ndarray, points: np.ndarray):
        """
        Args:
            image: (H, W, 3) uint8 RGB photo of one face, mouth at rest.
            points: (468, 2) float32 MediaPipe Face Mesh points in pixels on `image`.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} "
                             f"{image.shape}")
        if points.shape != (468, 2):
            raise ValueError(f"expected (468, 2) Face Mesh points, got {points.shape}")
        self.image = image
        self.points = points.astype(np.float64)
        self.height, self.width = image.shape[:2]
        self.face_width = float(np.linalg.norm(self.points[FACE_RIGHT] - self.points[FACE_LEFT]))
        self.center = self.points[LOWER_JAW].mean(axis=0)

        src, jaw = self._mesh()
        self._mouth = _WarpLevels(src, jaw, self._face_layer())
        self._src, self._jaw = src, jaw
        self._lids = [_Eyelid(image, self.points, eye) for eye in EYES]
        log.debug("face width %.1f px; mouth warp region %s", self.face_width, self._mouth.box)

    @classmethod
    def from_photo(cls, image: np.ndarray | None = None) -> TalkingFace:
        """Detect landmarks on `image` (default: scikit-image's astronaut) and build."""
        from . import landmarks

        if image is None:
            import skimage.data

            image = skimage.data.astronaut()
        points = landmarks.detect_image(image)
        if points is None:
            raise ValueError("no face found in the photo; use a frontal, well-lit face photo")
        return cls(image, points)

    @property
    def face_box(self) -> tuple[int, int, int, int]:
        """SyncTalk_2D-style crop box (x0, y0, x1, y1) of the still face (docs/design.md §10)."""
        x0 = self.points[FACE_LEFT, 0]
        x1 = self.points[FACE_RIGHT, 0]
        y0 = self.points[NOSE_BRIDGE, 1]
        return round(x0), round(y0), round(x1), round(y0 + x1 - x0)

    # ------------------------------------------------------------------ mesh construction

    def _face_layer(self) -> np.ndarray:
        """(H, W) float32 mask of the face (oval, grown by FACE_GROW px, soft edge).

        Only the face moves with the jaw: the neck and collar below it stay where they are and
        the dropping chin covers them, as a real chin does.
        """
        mask = np.zeros(self.image.shape[:2], np.uint8)
        polygon = np.round(self.points[FACE_OVAL] * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(mask, [polygon], 255, lineType=cv2.LINE_AA, shift=4)
        size = 2 * FACE_GROW + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
        return mask.astype(np.float32) / 255.0

    def _mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """Source vertices and their displacement at opening 1: (N, 2) and (N, 2) pixels."""
        p = self.points
        fw = self.face_width
        n = len(p)
        jaw = np.zeros((n, 2))
        drop = JAW_DROP * fw

        # Bottom edge of the upper teeth, just above the lower inner lip: fixed vertices, so
        # the teeth keep their shape and only the strip below them (the new cavity) stretches.
        inner = LOWER_INNER_LIP[1:-1]
        gap = p[inner, 1] - np.interp(p[inner, 0], p[UPPER_INNER_LIP, 0], p[UPPER_INNER_LIP, 1])
        teeth = p[inner] - np.stack([np.zeros(len(inner)),
                                     np.minimum(TEETH_EDGE, 0.4 * np.maximum(gap, 0))], 1)
        self._teeth_edge = teeth
        upper_y = np.interp(teeth[:, 0], p[UPPER_INNER_LIP, 0], p[UPPER_INNER_LIP, 1])
        self._teeth_to_lip = np.maximum(teeth[:, 1] - upper_y, 0)
        u = np.abs(2 * teeth[:, 0] - p[78, 0] - p[308, 0]) / (p[308, 0] - p[78, 0])
        zone0, zone1 = CORNER_ZONE
        self._corner_weight = np.clip((u - zone0) / (zone1 - zone0), 0, 1) ** 2

        # Jaw: pin what must move and what must stay, let the rest of the lower face follow
        # smoothly (harmonic interpolation over the mesh, solved below). The lower lip drops
        # in an elliptic profile, CORNER_DROP at the corners; the jaw contour drops fully at the
        # chin and JAW_SIDE_DROP at the cheeks (the mandible hinges near the ears).
        pinned = np.zeros(n, bool)
        corner_line = np.interp(p[:, 0], p[[61, 291], 0], p[[61, 291], 1])
        pinned |= p[:, 1] < corner_line - ABOVE_MOUTH_PX  # nose, cheeks, all above the mouth
        pinned[UPPER_INNER_LIP + UPPER_OUTER_LIP] = True
        # the whole lower lip (its inner and outer rims and the rows between) moves by a
        # profile of x alone, so its columns stay rigid and no lip triangle can fold
        left, right = p[61, 0], p[291, 0]
        inner_y = np.interp(p[:, 0], p[LOWER_INNER_LIP, 0], p[LOWER_INNER_LIP, 1])
        outer_y = np.interp(p[:, 0], p[LOWER_OUTER_LIP, 0], p[LOWER_OUTER_LIP, 1])
        lower_lip = (p[:, 0] > left) & (p[:, 0] < right) & (p[:, 1] >= inner_y)
        lower_lip &= p[:, 1] <= outer_y + 0.5
        lower_lip[LOWER_INNER_LIP + LOWER_OUTER_LIP] = True
        u = np.clip(np.abs(2 * p[:, 0] - left - right) / (right - left), 0, 1)
        lip_drop = drop * (CORNER_DROP + (1 - CORNER_DROP) * np.sqrt(1 - u * u))
        jaw[lower_lip, 1] = lip_drop[lower_lip]
        pinned |= lower_lip
        contour = [i for i in LOWER_JAW if p[i, 1] > corner_line[i]]
        side = np.clip(np.abs(p[contour, 0] - self.center[0]) / (0.5 * fw), 0, 1)
        low = np.clip((p[contour, 1] - corner_line[contour]) / (JAW_RAMP * fw), 0, 1)
        jaw[contour, 1] = drop * low * (JAW_SIDE_DROP + (1 - JAW_SIDE_DROP) * np.sqrt(1 - side**2))
        pinned[contour] = True

        # Fixed anchors: a band under the jaw (the chin slides over the neck, the collar stays)
        # and a ring around the face (hair and background stay).
        jaw_pts = p[LOWER_JAW]
        out = jaw_pts - self.center
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        band = jaw_pts + out * JAW_BAND * fw
        angles = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
        ring = self.center + RING_RADIUS * fw * np.stack([np.cos(angles), np.sin(angles)], 1)

        extra = np.concatenate([teeth, band, ring])
        src = np.concatenate([p, extra])
        zeros = np.zeros((len(extra), 2))
        jaw = np.concatenate([jaw, zeros])
        pinned = np.concatenate([pinned, np.ones(len(extra), bool)])
        jaw[:, 1] = _harmonic(src, jaw[:, 1], pinned)
        return src, jaw

    # ------------------------------------------------------------------------- rendering

    def render(self, opening: float, blink: float = 0.0, dx: float = 0.0, dy: float = 0.0,
               angle: float = 0.0) -> np.ndarray:
        """One frame.

        Args:
            opening: mouth opening in [0, 1] (0 = the photo's rest pose, 1 = jaw fully down).
            blink: eyelid closure in [0, 1].
            dx, dy: head translation in pixels; angle: head roll in degrees (about the face
                centre). Applied to the whole frame, edges reflected.

        Returns:
            (H, W, 3) uint8 RGB.
        """
        opening = float(np.clip(opening, 0.0, 1.0))
        blink = float(np.clip(blink, 0.0, 1.0))
        frame = self.image.copy()
        if opening > 0:
            self._mouth.apply(self.image, frame, opening)
            self._paint_cavity(frame, opening)
        if blink > 0:
            for lid in self._lids:
                lid.paint(frame, blink)
        if dx or dy or angle:
            m = cv2.getRotationMatrix2D((float(self.center[0]), float(self.center[1])), angle, 1.0)
            m[:, 2] += (dx, dy)
            frame = cv2.warpAffine(frame, m, (self.width, self.height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
        return frame

    def _paint_cavity(self, frame: np.ndarray, opening: float) -> None:
        """Shade the opening between the teeth edge (fixed) and the lower inner lip (moved)."""
        src, jaw = self._src, self._jaw
        # towards the corners the cavity reaches up to the upper lip (the dark buccal corners),
        # so the corners' drop does not drag a wedge of teeth into the opening
        teeth = self._teeth_edge.copy()
        teeth[:, 1] -= min(2 * opening, 1.0) * self._corner_weight * self._teeth_to_lip
        top = np.concatenate([src[[78]] + opening * jaw[[78]], teeth,
                              src[[308]] + opening * jaw[[308]]])
        bottom = src[LOWER_INNER_LIP] + opening * jaw[LOWER_INNER_LIP]
        x0 = int(np.floor(min(top[0, 0], bottom[0, 0])))
        x1 = int(np.ceil(max(top[-1, 0], bottom[-1, 0]))) + 1
        y0 = int(np.floor(top[:, 1].min())) - 1
        y1 = int(np.ceil(bottom[:, 1].max())) + 2
        xs = np.arange(x0, x1, dtype=np.float32)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        t = np.interp(xs, top[:, 0], top[:, 1]).astype(np.float32)
        b = np.interp(xs, bottom[:, 0], bottom[:, 1]).astype(np.float32)
        b = np.maximum(b, t)
        # pixel coverage of the span [t, b] in each column: soft, sub-pixel edges
        alpha = np.clip(ys + 0.5 - t, 0, 1) * np.clip(b - ys + 0.5, 0, 1)
        depth = np.clip((ys - t) / np.maximum(b - t, 1e-3), 0, 1)  # 0 under teeth, 1 at lip
        u = np.clip(np.abs(xs - 0.5 * (xs[0] + xs[-1])) / (0.5 * (xs[-1] - xs[0]) + 1e-3), 0, 1)
        colour = (CAVITY_TOP + (CAVITY_MID - CAVITY_TOP) * np.sqrt(depth)[..., None])
        # the tongue shows low in the middle when the mouth is well open
        tongue = (np.clip((depth - 0.55) / 0.45, 0, 1) * (1 - u**2) * opening)[..., None]
        colour = colour + (CAVITY_TONGUE - colour) * 0.7 * tongue
        # the lower teeth peek above the lower lip near the middle
        lower_teeth = np.clip(1 - (b - ys) / 1.5, 0, 1) * np.clip(b - ys + 0.5, 0, 1)
        lower_teeth = (lower_teeth * np.clip(1 - u / 0.55, 0, 1) * 0.35 * opening)[..., None]
        colour = colour + (LOWER_TEETH - colour) * lower_teeth
        colour = colour * (1 - 0.45 * u**2)[..., None]  # corners are in shadow
        region = frame[y0:y1, x0:x1].astype(np.float32)
        a = alpha[..., None]
        frame[y0:y1, x0:x1] = np.clip(region * (1 - a) + colour * a + 0.5, 0, 255).astype(np.uint8)


class _Eyelid:
    """Draws one upper eyelid closing over the eye.

    A warp of the lid smears the lashes into a dark band (tried); a real lid is skin sliding
    down with the lash line at its edge, so we paint that: per column, skin sampled above and
    below the eye (keeps the photo's own tones, no seam), a soft lash line at the moving edge.
    """

    def __init__(self, image: np.ndarray, points: np.ndarray, eye: dict[str, list[int]]):
        up, low = points[eye["upper"]], points[eye["lower"]]
        x0 = int(np.floor(min(up[:, 0].min(), low[:, 0].min())))
        x1 = int(np.ceil(max(up[:, 0].max(), low[:, 0].max()))) + 1
        self.xs = np.arange(x0, x1, dtype=np.float32)
        self.upper = np.interp(self.xs, *_sorted_curve(up)).astype(np.float32)
        self.lower = np.interp(self.xs, *_sorted_curve(low)).astype(np.float32)
        self.lower = np.maximum(self.lower, self.upper)
        cols = np.clip(self.xs.astype(int), 0, image.shape[1] - 1)

        def skin_along(curve: np.ndarray, offsets: range) -> np.ndarray:
            rows = [np.clip(np.round(curve + k).astype(int), 0, image.shape[0] - 1)
                    for k in offsets]
            skin = np.mean([image[r, cols] for r in rows], axis=0).astype(np.float32)
            # smooth along the lid: single columns carry noise and bits of lashes
            return cv2.GaussianBlur(skin[None], (0, 0), sigmaX=2.0,
                                    borderType=cv2.BORDER_REPLICATE)[0]  # (W, 3)

        # the closed lid shades from the skin above the eye to the skin below it, so it
        # joins both without a seam
        self.skin_top = skin_along(self.upper, range(-LID_SKIN_ROWS[1], -LID_SKIN_ROWS[0] + 1))
        self.skin_bottom = skin_along(self.lower, range(2, 5))
        self.y0 = int(np.floor(self.upper.min() - LID_COVER - 2))
        self.y1 = int(np.ceil(self.lower.max() + LASH_WIDTH + 1))
        self.x0, self.x1 = x0, x1

    def paint(self, frame: np.ndarray, blink: float) -> None:
        edge = self.upper + blink * (self.lower - self.upper)  # (W,) lid edge in this frame
        ys = np.arange(self.y0, self.y1, dtype=np.float32)[:, None]
        top = self.upper - LID_COVER  # start above the photo's own lash line, to cover it
        # coverage of the lid skin [top, edge], feathered at the top so it melts into the skin,
        # and of the lash line just above the edge
        lid = np.clip((ys + 1.0 - top) / 2.0, 0, 1) * np.clip(edge - ys + 0.5, 0, 1)
        lash = np.clip(1 - np.abs(ys - (edge - 0.5 * LASH_WIDTH)) / LASH_WIDTH, 0, 1)
        strength = min(blink / 0.15, 1.0)  # fades in: at blink 0 the frame is the photo
        # position on the fully closed lid (fixed per pixel, so the lid slides, not stretches)
        depth = np.clip((ys - top) / np.maximum(self.lower - top, 1e-3), 0, 1)[..., None]
        skin = self.skin_top[None] + (self.skin_bottom - self.skin_top)[None] * depth
        skin = skin * LID_SHADE
        region = frame[self.y0:self.y1, self.x0:self.x1].astype(np.float32)
        a = (lid * strength)[..., None]
        out = region * (1 - a) + skin * a
        b = (lash * LASH_ALPHA * strength)[..., None]
        out = out * (1 - b) + LASH * b
        frame[self.y0:self.y1, self.x0:self.x1] = np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _sorted_curve(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(pts[:, 0])
    return pts[order, 0], pts[order, 1]


class _WarpLevels:
    """Backward maps of one piecewise-affine warp at evenly spaced amounts in [0, 1].

    The warp moves vertex i to `src[i] + amount * disp[i]` over a fixed triangulation of `src`.
    Maps are built once with exact barycentric interpolation on the moved mesh and blended
    linearly between neighbouring levels at render time, which is what makes 1500 frames fast.
    """

    def __init__(self, src: np.ndarray, disp: np.ndarray, layer: np.ndarray):
        """
        Args:
            src, disp: (N, 2) vertices and their displacement at amount 1, pixels.
            layer: (H, W) float32 in [0, 1], where the moving layer is in the source image;
                elsewhere the image stays put and the layer slides over it (chin over collar).
        """
        height, width = layer.shape
        self._layer = layer
        triangles = Delaunay(src).simplices
        moving = np.abs(disp).sum(axis=1) > 1e-6
        touched = triangles[moving[triangles].any(axis=1)]
        corners = src[np.unique(touched)]
        reach = np.concatenate([corners, corners + disp[np.unique(touched)]])
        x0, y0 = np.maximum(np.floor(reach.min(axis=0)).astype(int) - 1, 0)
        x1, y1 = np.minimum(np.ceil(reach.max(axis=0)).astype(int) + 2, [width, height])
        self.box = (int(x0), int(y0), int(x1), int(y1))
        gx, gy = np.meshgrid(np.arange(x0, x1, dtype=np.float64),
                             np.arange(y0, y1, dtype=np.float64))
        self._grid = np.stack([gx, gy], axis=-1).astype(np.float32)
        self.levels = np.zeros((WARP_LEVELS, y1 - y0, x1 - x0, 2), np.float32)
        for k, amount in enumerate(np.linspace(0, 1, WARP_LEVELS)[1:], start=1):
            dst = src + amount * disp
            _check_no_fold(src, dst, triangles)
            tri = mtri.Triangulation(dst[:, 0], dst[:, 1], triangles)
            for c in range(2):
                back = mtri.LinearTriInterpolator(tri, src[:, c] - dst[:, c])(gx, gy)
                self.levels[k, ..., c] = np.ma.filled(back, 0.0)

    def apply(self, image: np.ndarray, out: np.ndarray, amount: float) -> None:
        """Warp `image` by `amount` in [0, 1] into `out` (same shape) inside the warp's box."""
        pos = amount * (WARP_LEVELS - 1)
        k = min(int(pos), WARP_LEVELS - 2)
        f = pos - k
        disp = self.levels[k] * (1 - f) + self.levels[k + 1] * f
        maps = self._grid + disp
        x0, y0, x1, y1 = self.box
        # remap from the whole image: maps point outside the box near its edges
        warped = cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)
        alpha = cv2.remap(self._layer, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)[..., None]
        behind = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = (behind + (warped - behind) * alpha + 0.5).astype(np.uint8)


def _harmonic(src: np.ndarray, values: np.ndarray, pinned: np.ndarray) -> np.ndarray:
    """Fill the free vertices' values with the mesh-Laplacian interpolation of the pinned ones.

    Each free value becomes the mean of its mesh neighbours: the smoothest field that meets the
    pins, so the skin between the lips and the jaw line stretches evenly instead of folding.
    """
    triangles = Delaunay(src).simplices
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = np.unique(np.sort(edges, axis=1), axis=0)
    n = len(src)
    adj = sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    adj = (adj + adj.T).tocsr()
    laplacian = (sparse.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj).tocsr()
    free = ~pinned
    out = values.copy()
    rhs = -laplacian[free][:, pinned] @ values[pinned]
    out[free] = spsolve(laplacian[free][:, free].tocsc(), rhs)
    return out


def _check_no_fold(src: np.ndarray, dst: np.ndarray, triangles: np.ndarray) -> None:
    """Internal invariant: no triangle flips (the warp would tear or fold the skin)."""

    def signed_area(v: np.ndarray) -> np.ndarray:
        a, b, c = v[triangles[:, 0]], v[triangles[:, 1]], v[triangles[:, 2]]
        return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])

    flipped = np.sign(signed_area(src)) != np.sign(signed_area(dst))
    assert not flipped.any(), f"{flipped.sum()} mesh triangles fold over"


# ------------------------------------------------------------------------ speech → mouth

# Our own sentences, mixing open vowels, lip closures (p b m), labiodentals (f v) and rounded
# vowels, so the mouth track has the whole range. HELDOUT_SENTENCES never occur in the video.
SENTENCES = [
    "Good morning, and welcome to this short demonstration.",
    "My name is not important, but my mouth is moving for a reason.",
    "Bright blue balloons bobbed above the busy market.",
    "Father parked the car far away from the harbour.",
    "We watched the waves roll over the warm white sand.",
    "Please pass me the map before the meeting begins.",
    "A quiet voice is often more powerful than a loud one.",
    "The old piano stood alone in the empty hall.",
    "Five fine violins were fixed for the festival.",
    "Open the window, and let the fresh air inside.",
    "Mothers and fathers met after the match on Monday.",
    "How about a cup of hot coffee and a piece of cake?",
    "The river runs quickly through the narrow valley.",
    "I always forget where I put my keys.",
    "Nobody knows how long the journey will take.",
    "The big brown bear ambled across the open meadow.",
    "Each morning she walks along the beach at dawn.",
    "Our team finished the puzzle in under an hour.",
    "Large red apples were piled high in the basket.",
    "You can learn almost anything with enough patience.",
    "The pilot announced that we would arrive on time.",
    "Bamboo grows remarkably fast in a warm climate.",
    "Honest answers are better than clever excuses.",
    "I am talking now, and soon I will stop again.",
    "Thank you very much for watching, and goodbye.",
]
HELDOUT_SENTENCES = [
    "Summer evenings by the lake are calm and golden.",
    "Peter painted a purple boat on the garage wall.",
    "Every autumn the maple leaves turn a vivid orange.",
    "Would you like to hear a story about a lighthouse?",
    "Many hands make light work, as my grandmother said.",
    "The library opens at nine and closes at half past five.",
    "A gentle breeze moved the curtains back and forth.",
    "Always double check the address before you send it.",
]

# espeak-ng (en) phoneme mnemonics → jaw opening in [0, 1]. Keys are matched on the name
# without stress marks; vowels not listed fall back by their first letter (_VOWEL_CLASSES).
_VISEMES = {
    "p": 0.0, "b": 0.0, "m": 0.0,  # lips pressed together
    "f": 0.1, "v": 0.1,  # lower lip on the upper teeth
    "w": 0.18, "u:": 0.3, "U": 0.3, "U@": 0.35, "oU": 0.5, "OI": 0.6, "o@": 0.55,  # rounded
    "i:": 0.3, "i": 0.3, "I": 0.33, "I2": 0.33, "i@": 0.38, "eI": 0.5,  # spread, close
    "@": 0.42, "3:": 0.45, "@L": 0.35, "@2": 0.4, "@5": 0.4, "3": 0.45,  # mid, central
    "E": 0.62, "e@": 0.65, "a": 0.85, "a#": 0.75, "aI": 0.85, "aU": 0.85, "A:": 1.0,
    "A@": 0.9, "0": 0.85, "O:": 0.75, "O@": 0.75, "V": 0.8,  # open
    "h": 0.35, "l": 0.3, "r": 0.25, "j": 0.25,
}
_VOWEL_CLASSES = {"a": 0.85, "A": 0.9, "0": 0.85, "O": 0.75, "V": 0.8, "E": 0.6, "e": 0.55,
                  "3": 0.45, "@": 0.42, "I": 0.33, "i": 0.3, "U": 0.3, "u": 0.3, "o": 0.55}
_CONSONANT = 0.22  # t d n s z k g T D S Z tS dZ N ...: teeth nearly together
_PAUSE = 0.0  # espeak pause phonemes start with "_"
_UNSTRESSED = 0.85  # unstressed vowels open less than stressed ones
ATTACK_S, RELEASE_S = 0.03, 0.06  # time constants of the opening envelope
CLOSURE_S = 0.012  # lips snap shut for p/b/m, or the short closures would not show
LEAD_S = 0.04  # lips move slightly ahead of the sound they make


def viseme_opening(phoneme: str) -> float:
    """Jaw opening in [0, 1] for one espeak-ng phoneme name (e.g. "'A:", "p", "_:")."""
    name = phoneme.lstrip("',")
    if not name or name.startswith("_"):
        return _PAUSE
    vowel = name[0] in _VOWEL_CLASSES  # espeak's consonant names never start with these
    value = _VISEMES.get(name, _VOWEL_CLASSES.get(name[0], _CONSONANT))
    return value * _UNSTRESSED if vowel and not phoneme.startswith("'") else value


def opening_track(phonemes: list[tuple[float, str]], audio: np.ndarray, sample_rate: int,
                  n_frames: int, fps: float = FPS) -> np.ndarray:
    """Per-frame mouth opening in [0, 1] for speech with known phoneme times.

    Visemes are held from each phoneme's start to the next, led by LEAD_S, smoothed with a
    fast attack and a slower release (a jaw opens quicker than it settles), then gated by the
    audio envelope so silence always gives a closed, still mouth.

    Args:
        phonemes: (start s, espeak name) in time order, on the clock of `audio`.
        audio: (N,) float32 mono; n_frames: frames to produce at `fps`.

    Returns:
        (n_frames,) float32 in [0, 1]; frame i covers [i/fps, (i+1)/fps).
    """
    rate = 200.0  # Hz of the envelope simulation
    n = int(np.ceil(n_frames / fps * rate)) + 1
    t = np.arange(n) / rate
    target = np.zeros(n, np.float32)
    closure = np.zeros(n, bool)
    if phonemes:
        starts = np.array([s for s, _ in phonemes]) - LEAD_S
        values = np.array([viseme_opening(name) for _, name in phonemes], np.float32)
        bilabial = np.array([name.lstrip("',") in ("p", "b", "m") for _, name in phonemes])
        idx = np.searchsorted(starts, t, side="right") - 1
        target = np.where(idx >= 0, values[np.clip(idx, 0, None)], 0.0).astype(np.float32)
        closure = (idx >= 0) & bilabial[np.clip(idx, 0, None)]
    # the audio's own loudness: 1 while voiced, 0 in silence (20 ms RMS, relative to peak)
    hop = sample_rate / rate
    frame_idx = np.minimum((np.arange(len(audio)) / hop).astype(int), n - 1)
    energy = np.bincount(frame_idx, audio.astype(np.float64) ** 2, minlength=n)[:n]
    count = np.maximum(np.bincount(frame_idx, minlength=n)[:n], 1)
    rms = np.sqrt(np.convolve(energy / count, np.ones(4) / 4, mode="same"))
    ref = np.percentile(rms[rms > 0], 95) if np.any(rms > 0) else 1.0
    gate = np.clip(rms / (0.2 * ref), 0, 1) ** 0.5
    target = target * (0.5 + 0.5 * gate) * (gate > 0.05)

    smooth = np.zeros(n, np.float32)
    a_up, a_down, a_shut = (1 - np.exp(-1 / (tau * rate)) for tau in
                            (ATTACK_S, RELEASE_S, CLOSURE_S))
    level = 0.0
    for i, goal in enumerate(target):
        rate_i = a_up if goal > level else (a_shut if closure[i] else a_down)
        level += (goal - level) * rate_i
        smooth[i] = level
    # average the envelope over each video frame's 40 ms
    edges = (np.arange(n_frames + 1) / fps * rate).astype(int)
    sums = np.add.reduceat(smooth, edges[:-1])
    out = sums / np.maximum(np.diff(edges), 1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------ blinks and motion

BLINK_GAP_S = (3.0, 6.0)  # seconds between blinks, drawn uniformly
BLINK_CLOSE_S, BLINK_HOLD_S, BLINK_OPEN_S = 0.08, 0.04, 0.16  # a blink lasts ~0.3 s
HEAD_SHIFT_PX = 2.5  # amplitude of the slow head translation (each axis)
HEAD_ROLL_DEG = 1.2  # amplitude of the slow head roll
HEAD_PERIODS_S = (4.0, 14.0)  # range of the periods of the motion's sinusoids


def blink_track(n_frames: int, rng: np.random.Generator, fps: float = FPS) -> np.ndarray:
    """(n_frames,) float32 lid closure in [0, 1]: quick close, short hold, slower opening."""
    t = (np.arange(n_frames) + 0.5) / fps
    out = np.zeros(n_frames, np.float32)
    start = rng.uniform(1.0, BLINK_GAP_S[1])
    while start < n_frames / fps:
        dt = t - start
        closing = np.clip(dt / BLINK_CLOSE_S, 0, 1)
        opening = np.clip((dt - BLINK_CLOSE_S - BLINK_HOLD_S) / BLINK_OPEN_S, 0, 1)
        lid = np.where(dt < 0, 0.0, closing * (1 - opening))
        out = np.maximum(out, np.sin(0.5 * np.pi * lid) ** 2)
        start += rng.uniform(*BLINK_GAP_S)
    return out


def head_motion(n_frames: int, rng: np.random.Generator, fps: float = FPS) -> np.ndarray:
    """(n_frames, 3) float32 (dx px, dy px, roll degrees): sums of slow sinusoids."""
    t = np.arange(n_frames) / fps
    out = np.zeros((n_frames, 3), np.float32)
    for axis, amplitude in enumerate((HEAD_SHIFT_PX, HEAD_SHIFT_PX, HEAD_ROLL_DEG)):
        periods = rng.uniform(*HEAD_PERIODS_S, size=3)
        phases = rng.uniform(0, 2 * np.pi, size=3)
        weights = rng.uniform(0.5, 1.0, size=3)
        wave = sum(w * np.sin(2 * np.pi * t / p + ph)
                   for w, p, ph in zip(weights, periods, phases))
        out[:, axis] = amplitude * wave / weights.sum()
    return out


# ------------------------------------------------------------------------------ the script


@dataclass(frozen=True)
class Script:
    """Speech laid out on a timeline.

    audio: (N,) float32 mono at `sample_rate`, silence before, between and after sentences.
    phonemes: (start s, espeak name) on the audio's clock; starts: each sentence's start (s).
    """

    audio: np.ndarray
    sample_rate: int
    sentences: list[str]
    starts: list[float]
    phonemes: list[tuple[float, str]]


def speak_script(pool: list[str], seconds: float, lead_silence: float, rng: np.random.Generator,
                 sample_rate: int = SAMPLE_RATE) -> Script:
    """Fill `seconds` with sentences from `pool` (order from `rng`), silence at both ends.

    Sentences are taken in a shuffled order, skipping any that would overrun the trailing
    silence; the pool is reshuffled if it runs out. Pauses between sentences are 0.3–0.8 s.
    """
    total = round(seconds * sample_rate)
    end = seconds - lead_silence  # speech must be over by then
    spoken = {text: tts.synthesize(text, wpm=WPM, sample_rate=sample_rate) for text in pool}
    shortest = min(s.duration for s in spoken.values())
    if lead_silence + shortest > end:
        raise ValueError(
            f"seconds={seconds} leaves no room for speech: {2 * lead_silence:.1f} s of silence "
            f"plus the shortest sentence ({shortest:.1f} s); raise seconds or lower lead_silence"
        )
    audio = np.zeros(total, np.float32)
    sentences: list[str] = []
    starts: list[float] = []
    phonemes: list[tuple[float, str]] = []
    t = lead_silence
    while True:
        order = [pool[i] for i in rng.permutation(len(pool))]
        fitted = [text for text in order if t + spoken[text].duration <= end]
        if not fitted:
            break
        for text in fitted:
            speech = spoken[text]
            if t + speech.duration > end:
                continue
            i0 = round(t * sample_rate)
            audio[i0:i0 + len(speech.audio)] = speech.audio[:total - i0]
            sentences.append(text)
            starts.append(round(t, 4))
            phonemes += [(t + start, name) for start, name in speech.phonemes]
            t += speech.duration + rng.uniform(*PAUSE_RANGE)
    return Script(audio, sample_rate, sentences, starts, phonemes)


# ---------------------------------------------------------------------------------- make_demo


@dataclass(frozen=True)
class DemoPaths:
    """Files of one demo dataset (`root/name/`)."""

    folder: Path
    video: Path  # name.mp4: 25 fps H.264 + AAC, the "recording" to train on
    heldout_wav: Path  # other sentences, 16 kHz, to drive inference with
    mouth_open: Path  # (n_frames,) float32 ground-truth opening per video frame
    heldout_mouth_open: Path  # (n_frames,) float32 opening per 25 fps frame of heldout_wav
    meta: Path  # demo.json: parameters, sentences, face box

    @classmethod
    def at(cls, folder: Path, name: str) -> DemoPaths:
        return cls(folder, folder / f"{name}.mp4", folder / "heldout.wav",
                   folder / "mouth_open.npy", folder / "heldout_mouth_open.npy",
                   folder / "demo.json")

    def all_exist(self) -> bool:
        return all(p.exists() for p in (self.video, self.heldout_wav, self.mouth_open,
                                        self.heldout_mouth_open, self.meta))


@dataclass(frozen=True)
class DemoPlan:
    """Everything random about a demo, drawn from one seed, before any frame is drawn.

    opening, blink: (n_frames,) float32 in [0, 1]; motion: (n_frames, 3) float32 (dx px, dy px,
    roll deg); heldout_opening: (n heldout frames,) float32, 25 per second of heldout audio.
    """

    script: Script
    opening: np.ndarray
    blink: np.ndarray
    motion: np.ndarray
    heldout: Script
    heldout_opening: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.opening)


def plan_demo(seconds: float = 60.0, seed: int = 0, lead_silence: float = 3.0) -> DemoPlan:
    """Speech, mouth, blinks and head motion of a demo; deterministic for a seed."""
    if seconds <= 0 or lead_silence < 0:
        raise ValueError(f"need seconds > 0 and lead_silence >= 0, got {seconds}, {lead_silence}")
    speech_rng, heldout_rng, blink_rng, motion_rng = np.random.default_rng(seed).spawn(4)
    n_frames = round(seconds * FPS)
    script = speak_script(SENTENCES, n_frames / FPS, lead_silence, speech_rng)
    heldout_lead = min(lead_silence, HELDOUT_LEAD_S)
    heldout = speak_script(HELDOUT_SENTENCES, HELDOUT_SECONDS, heldout_lead, heldout_rng)
    return DemoPlan(
        script=script,
        opening=opening_track(script.phonemes, script.audio, SAMPLE_RATE, n_frames),
        blink=blink_track(n_frames, blink_rng),
        motion=head_motion(n_frames, motion_rng),
        heldout=heldout,
        heldout_opening=opening_track(heldout.phonemes, heldout.audio, SAMPLE_RATE,
                                      round(HELDOUT_SECONDS * FPS)),
    )


def make_demo(root: str | Path = "dataset", name: str = "demo", seconds: float = 60.0,
              seed: int = 0, lead_silence: float = 3.0, overwrite: bool = False) -> DemoPaths:
    """Write a talking-head dataset of the astronaut photo speaking espeak-ng sentences.

    Writes `root/name/name.mp4` (512x512, 25 fps, H.264 + AAC, `lead_silence` seconds of
    silence at both ends), `heldout.wav` (other sentences, HELDOUT_SECONDS long, 16 kHz),
    their per-frame ground-truth mouth openings (`mouth_open.npy`, `heldout_mouth_open.npy`,
    float32 in [0, 1]) and `demo.json` (parameters, sentences, face box). A demo with the same
    parameters already on disk is reused unless `overwrite`. The 60 s default takes ~35 s on
    2 CPU cores, most of it in x264.
    """
    from . import media  # ffmpeg is only needed here, not for plans or single frames

    paths = DemoPaths.at(Path(root) / name, name)
    params = {"version": DEMO_VERSION, "seconds": float(seconds), "seed": int(seed),
              "lead_silence": float(lead_silence), "fps": FPS, "sample_rate": SAMPLE_RATE}
    if not overwrite and paths.all_exist():
        old = _read_json(paths.meta).get("params")
        if old == params:
            log.info("demo %s exists with the same parameters; reusing it", paths.folder)
            return paths
        log.info("demo %s was made with %s; rebuilding it with %s", paths.folder, old, params)
    started = time.perf_counter()
    log.info("planning a %.0f s demo (seed %d): speech by espeak-ng", seconds, seed)
    plan = plan_demo(seconds, seed, lead_silence)
    face = TalkingFace.from_photo()
    paths.folder.mkdir(parents=True, exist_ok=True)
    paths.meta.unlink(missing_ok=True)  # written last: its presence marks a complete demo

    with media.VideoWriter(paths.video, fps=FPS, crf=18, preset="medium",
                           audio=plan.script.audio, sample_rate=SAMPLE_RATE) as writer:
        for i in progress_bar(range(plan.n_frames), desc="demo frames", unit="frame"):
            dx, dy, angle = plan.motion[i]
            writer.write(face.render(plan.opening[i], plan.blink[i], dx, dy, angle))
    files.save_npy(paths.mouth_open, plan.opening)
    media.save_wav(paths.heldout_wav, plan.heldout.audio, SAMPLE_RATE)
    files.save_npy(paths.heldout_mouth_open, plan.heldout_opening)
    files.save_json(paths.meta, {
        "params": params, "photo": "skimage.data.astronaut", "voice": "espeak-ng en-us",
        "wpm": WPM, "frames": plan.n_frames, "face_box": list(face.face_box),
        "face_width": round(face.face_width, 2),
        "sentences": plan.script.sentences, "sentence_starts": plan.script.starts,
        "heldout_sentences": plan.heldout.sentences, "heldout_starts": plan.heldout.starts,
        "heldout_frames": len(plan.heldout_opening),
        "heldout_lead_silence": min(lead_silence, HELDOUT_LEAD_S),
    })
    log.info("demo written to %s in %.1f s (%d frames, %d sentences)", paths.folder,
             time.perf_counter() - started, plan.n_frames, len(plan.script.sentences))
    return paths


def _read_json(path: Path) -> dict:
    """The demo's metadata, or {} if unreadable (then the demo is simply rebuilt)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("cannot read %s (%s); rebuilding the demo", path, exc)
        return {}
    return meta if isinstance(meta, dict) else {}


__all__ = [
    "HELDOUT_SENTENCES",
    "SENTENCES",
    "DemoPaths",
    "DemoPlan",
    "Script",
    "TalkingFace",
    "blink_track",
    "head_motion",
    "make_demo",
    "opening_track",
    "plan_demo",
    "speak_script",
    "viseme_opening",
]
