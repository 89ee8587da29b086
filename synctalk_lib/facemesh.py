"""Face Mesh without the mediapipe package: MediaPipe's two face models, run by LiteRT.

mediapipe 0.10.21 is the last release whose wheel holds the Face Mesh models and the legacy
`solutions.face_mesh` graph, and it has no wheel for Python 3.13 (it also pins protobuf < 5).
This module re-creates that graph (`face_landmark_front_cpu` with one face and
`refine_landmarks=False`) with numpy and OpenCV, and runs the same two `.tflite` files with
LiteRT (`ai-edge-litert`, Google's successor of `tflite-runtime`, wheels for CPython
3.10-3.14), so its 468 points are the mediapipe backend's (measured in docs/landmarks.md).

Per frame:
1. Face detector (short range, 128x128 letterboxed input in [-1, 1]): 896 SSD anchors give boxes
   and six keypoints; the best box is averaged with those overlapping it (weighted NMS).
2. Region of interest: that box turned so the eyes lie level, made square on its long side and
   enlarged 1.5x, the framing the landmark model was trained on.
3. Landmark model (that region resampled to 192x192, in [0, 1]): 468 points and a face score;
   the points are mapped back to image pixels.
4. On video the next frame's region comes from these points (their bounding box, turned by the
   line through the outer eye corners), so the detector runs only when there is no previous
   face or the face score falls below the threshold. Unlike mediapipe, which then reports no
   face for that frame, the detector runs again on the same frame.

The model files are Apache-2.0 (The MediaPipe Authors), copied unchanged from the
mediapipe 0.10.21 wheel (`mediapipe/modules/...`, see MODEL_FILES) into `facemesh_models/`
with the wheel's LICENSE. Their sha256 digests are checked on every load.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .quiet import native_chatter_hidden

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).with_name("facemesh_models")
# file name -> (sha256, where in the mediapipe 0.10.21 wheel it came from)
MODEL_FILES = {
    "face_detection_short_range.tflite": (
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        "mediapipe/modules/face_detection/face_detection_short_range.tflite"),
    "face_landmark.tflite": (
        "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
        "mediapipe/modules/face_landmark/face_landmark.tflite"),
}
DETECTOR_FILE, LANDMARK_FILE = MODEL_FILES

DETECTOR_INPUT = 128  # px, side of the detector's square input
LANDMARK_INPUT = 192  # px, side of the landmark model's square input
N_POINTS = 468
# SSD layout of the short-range detector: feature maps of stride 8 (16x16 cells) and 16 (8x8
# cells, three layers); two anchors per layer and cell, all of size 1 (boxes are absolute)
ANCHOR_STRIDES = (8, 16, 16, 16)
ANCHORS_PER_LAYER = 2
N_KEYPOINTS = 6  # eyes, nose tip, mouth, ear tragions
SCORE_CLIP = 100.0  # detector logits are clipped to +-this before the sigmoid, as in the graph
NMS_IOU = 0.3  # boxes overlapping the best one more than this are the same face
ROI_SCALE = 1.5  # face box -> landmark model input, the framing the model was trained on
# point pairs whose line sets the region's rotation: the detector's eye keypoints, and the
# mesh's outer eye corners (33 on the image's left, 263 on its right)
DETECTOR_EYES = (0, 1)
MESH_EYES = (33, 263)


class FaceMeshError(RuntimeError):
    """LiteRT or a model file is missing or not the expected one."""


# ---------------------------------------------------------------- model files and runtime

def read_model(name: str, model_dir: Path = MODEL_DIR) -> bytes:
    """The bytes of one model file, refused unless its sha256 is the recorded one."""
    expected, origin = MODEL_FILES[name]
    path = Path(model_dir) / name
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise FaceMeshError(
            f"facemesh model {path} cannot be read ({exc}); it ships with synctalk_lib "
            f"(copied from {origin} in the mediapipe 0.10.21 wheel): restore it with "
            "`git checkout -- synctalk_lib/facemesh_models` or reinstall the package"
        ) from exc
    found = hashlib.sha256(content).hexdigest()
    if found != expected:
        raise FaceMeshError(
            f"facemesh model {path} has sha256 {found}, expected {expected} (the file from "
            f"{origin}, mediapipe 0.10.21); it is damaged or was replaced: restore it with "
            "`git checkout -- synctalk_lib/facemesh_models` or reinstall the package"
        )
    return content


class Model:
    """One `.tflite` model in a LiteRT interpreter; outputs are found by shape, not order."""

    def __init__(self, data: bytes, num_threads: int):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise FaceMeshError(
                "the facemesh landmark backend needs LiteRT: `pip install ai-edge-litert` "
                "(wheels for Python 3.10-3.14), or use landmarks.backend='mediapipe'"
            ) from exc
        # LiteRT announces its XNNPACK delegate on fd 2 while it builds the graph
        with native_chatter_hidden():
            self._it = Interpreter(model_content=data, num_threads=num_threads)
            self._it.allocate_tensors()
        (inp,) = self._it.get_input_details()
        self.input_index = int(inp["index"])
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.outputs = {int(d["shape"][-1]): int(d["index"])
                        for d in self._it.get_output_details()}

    def __call__(self, x: np.ndarray) -> dict[int, np.ndarray]:
        """x: input tensor, float32; returns each output flattened, keyed by its last size."""
        self._it.set_tensor(self.input_index, x[None])
        self._it.invoke()
        return {size: self._it.get_tensor(i).reshape(-1, size)
                for size, i in self.outputs.items()}


# ---------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Roi:
    """A square image region in pixels: centre, side, rotation (radians, clockwise on screen)."""

    cx: float
    cy: float
    side: float
    angle: float

    def crop(self, rgb: np.ndarray, size: int, border: int) -> np.ndarray:
        """The region resampled to (size, size, 3) uint8, as the graph's ImageToTensor does.

        Corners map onto the output's pixel edges (0 and `size`), bilinear, `border` outside.
        """
        rect = ((self.cx, self.cy), (self.side, self.side), math.degrees(self.angle))
        src = cv2.boxPoints(rect).astype(np.float32)  # bottom-left, top-left, top-right, ...
        dst = np.float32([[0, size], [0, 0], [size, 0], [size, size]])
        warp = cv2.getPerspectiveTransform(src, dst)
        return cv2.warpPerspective(rgb, warp, (size, size), flags=cv2.INTER_LINEAR,
                                   borderMode=border, borderValue=(0, 0, 0))

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) points in [0, 1] of the region -> (N, 2) image pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
        return np.stack([(c * x - s * y) * self.side + self.cx,
                         (s * x + c * y) * self.side + self.cy], axis=1)


def face_roi(box: tuple[float, float, float, float], eye_a: np.ndarray,
             eye_b: np.ndarray) -> Roi:
    """The landmark model's region for a face box (x0, y0, x1, y1 px) and two eye points."""
    x0, y0, x1, y1 = box
    angle = -math.atan2(-(eye_b[1] - eye_a[1]), eye_b[0] - eye_a[0])
    angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * ROI_SCALE, angle)


def roi_from_points(points: np.ndarray) -> Roi:
    """The next frame's region from this frame's (468, 2) pixel points (tracking)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    return face_roi((lo[0], lo[1], hi[0], hi[1]), points[MESH_EYES[0]], points[MESH_EYES[1]])


# ---------------------------------------------------------------- detector decoding

def ssd_anchors() -> np.ndarray:
    """(896, 2) float32 anchor centres (x, y) in [0, 1] of the detector input.

    Consecutive layers of one stride share a grid: each cell holds ANCHORS_PER_LAYER anchors
    per layer, cells row by row, as MediaPipe's SsdAnchorsCalculator orders them.
    """
    centres = []
    layer = 0
    while layer < len(ANCHOR_STRIDES):
        stride = ANCHOR_STRIDES[layer]
        same = layer
        while same < len(ANCHOR_STRIDES) and ANCHOR_STRIDES[same] == stride:
            same += 1
        cells = math.ceil(DETECTOR_INPUT / stride)
        per_cell = ANCHORS_PER_LAYER * (same - layer)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1)  # (cells², 2), row by row
        centres.append(np.repeat(xy, per_cell, axis=0))
        layer = same
    return np.concatenate(centres).astype(np.float32)


ANCHORS = ssd_anchors()


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (4,) box with (N, 4) boxes, all x0, y0, x1, y1."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def best_face(raw_boxes: np.ndarray, raw_scores: np.ndarray, min_score: float
              ) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The best face of one detector run, in [0, 1] of the detector input, or None.

    raw_boxes: (896, 16) float32, per anchor: centre offset x, y, size w, h, then six keypoints
    (x, y), all in input pixels. raw_scores: (896, 1) logits. Returns ((4,) box x0, y0, x1, y1,
    (6, 2) keypoints, score). This is the first cluster of MediaPipe's weighted non-max
    suppression (the top box averaged with every box overlapping it, weighted by score), which
    is all a one-face graph keeps.
    """
    logits = np.clip(raw_scores[:, 0].astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1 / (1 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return None
    raw = raw_boxes[keep] / DETECTOR_INPUT
    anchors = ANCHORS[keep]
    centre = raw[:, :2] + anchors
    boxes = np.concatenate([centre - raw[:, 2:4] / 2, centre + raw[:, 2:4] / 2], axis=1)
    keypoints = raw[:, 4:].reshape(-1, N_KEYPOINTS, 2) + anchors[:, None, :]
    top = int(np.argmax(scores[keep]))
    same = iou(boxes[top], boxes) > NMS_IOU
    weights = scores[keep][same]
    weights = weights / weights.sum()
    box = (boxes[same] * weights[:, None]).sum(axis=0)
    kps = (keypoints[same] * weights[:, None, None]).sum(axis=0)
    return box, kps, float(scores[keep][top])


# ---------------------------------------------------------------- the pipeline

class FaceMesh:
    """Face Mesh on RGB frames; `video=True` tracks the face from one call to the next."""

    def __init__(self, video: bool = True, min_confidence: float = 0.5, num_threads: int = 1,
                 model_dir: Path = MODEL_DIR):
        """min_confidence: threshold of both the detector's and the landmark model's face score
        (mediapipe's min_detection_confidence and min_tracking_confidence). num_threads: LiteRT
        threads; one frame at a time gains little from more, and preprocessing runs beside
        other work."""
        self.video = video
        self.min_confidence = min_confidence
        detector, mesh = (read_model(f, model_dir) for f in (DETECTOR_FILE, LANDMARK_FILE))
        self._detector = Model(detector, num_threads)
        self._mesh = Model(mesh, num_threads)
        self._roi: Roi | None = None  # the region to look at in the next frame (video)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb: (H, W, 3) uint8 RGB. Returns (468, 2) float32 pixel coords (x, y), or None."""
        points = None
        if self.video and self._roi is not None:
            points = self.landmarks(rgb, self._roi)
        if points is None:
            roi = self.detect(rgb)
            points = None if roi is None else self.landmarks(rgb, roi)
        self._roi = roi_from_points(points) if points is not None and self.video else None
        return points

    def detect(self, rgb: np.ndarray) -> Roi | None:
        """The landmark region of the most confident face in the frame, or None."""
        h, w = rgb.shape[:2]
        frame = Roi(w / 2, h / 2, max(w, h), 0.0)  # whole frame, letterboxed to a square
        patch = frame.crop(rgb, DETECTOR_INPUT, cv2.BORDER_CONSTANT)
        x = patch.astype(np.float32) * (2 / 255) - 1  # (128, 128, 3) in [-1, 1]
        out = self._detector(x)
        face = best_face(out[16], out[1], self.min_confidence)  # (896, 16), (896, 1)
        if face is None:
            return None
        box, keypoints, _ = face
        corners = frame.to_image(box.reshape(2, 2)).ravel()  # no rotation: corners stay corners
        eyes = frame.to_image(keypoints[list(DETECTOR_EYES)])
        return face_roi(tuple(corners), eyes[0], eyes[1])

    def landmarks(self, rgb: np.ndarray, roi: Roi) -> np.ndarray | None:
        """(468, 2) float32 pixel points of the face in `roi`, or None if its score is low."""
        patch = roi.crop(rgb, LANDMARK_INPUT, cv2.BORDER_REPLICATE)
        out = self._mesh(patch.astype(np.float32) * (1 / 255))  # (192, 192, 3) in [0, 1]
        score = 1 / (1 + math.exp(-float(out[1][0, 0])))
        if score <= self.min_confidence:
            return None
        uv = out[3 * N_POINTS].reshape(N_POINTS, 3)[:, :2] / LANDMARK_INPUT
        return roi.to_image(uv).astype(np.float32)

    def reset(self) -> None:
        """Forget the tracked face (the next frame is searched from scratch)."""
        self._roi = None

    def close(self) -> None:
        self._roi = None
