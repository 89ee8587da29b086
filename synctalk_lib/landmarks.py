"""Face landmarks: detector backends, landmark schemes and SyncTalk_2D `.lms` files.

Backends
- `facemesh`: MediaPipe Face Mesh's own two models (shipped in `facemesh_models/`) run by
  LiteRT through our re-creation of its graph (`facemesh.py`); 468 points, the same as
  `mediapipe`'s to a few hundredths of a pixel, on Python 3.10-3.13 (docs/landmarks.md).
- `mediapipe`: MediaPipe Face Mesh 0.10.21, 468 points, models inside the wheel, so it works
  offline; no wheel for Python 3.13. Kept as the reference the `facemesh` backend is measured
  against.
- `auto` (default): `facemesh` when LiteRT is installed, else `mediapipe`.
- `face_alignment`: the FAN 68-point detector, used only when its weights are already on disk.
Both Face Mesh backends track the face on video (≈2–4 ms per 512² frame on 2 cores).

A scheme names the points every other module needs (crop anchors, mouth, nose, jaw) so crop,
checks and evaluation never hard-code indices of one detector.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from . import files
from .config import LandmarkConfig
from .quiet import native_chatter_hidden

log = logging.getLogger(__name__)


class LandmarkError(RuntimeError):
    """A landmark backend is unavailable or a landmark file is unreadable."""


@dataclass(frozen=True)
class Scheme:
    """Indices of the points that the workbench uses, for one detector's point layout.

    The crop anchors follow SyncTalk_2D (docs/design.md §2): `left`/`right` cheek contour at mouth
    height give the crop width, `top` (nose bridge) gives its upper edge.
    """

    name: str
    n_points: int
    left: int
    right: int
    top: int
    chin: int | None = None
    nose: int | None = None  # nose tip, tracks head motion
    lip_top: int | None = None  # inner upper lip
    lip_bottom: int | None = None  # inner lower lip
    mouth_left: int | None = None
    mouth_right: int | None = None
    jaw: tuple[int, ...] = ()  # lower face contour, left ear to right ear via the chin
    lips: tuple[int, ...] = ()  # outer and inner contours of both lips (what LMD compares)

    @property
    def has_mouth(self) -> bool:
        return self.lip_top is not None and self.lip_bottom is not None

    @property
    def has_jaw(self) -> bool:
        """Enough points to outline the lower face (`crop.lower_face_mask`)."""
        return bool(self.jaw) and self.nose is not None and self.lip_top is not None


# Face Mesh lip lines (docs/design.md §10), each ordered from image left to right; the synthetic
# demo face draws its mouth from them
MEDIAPIPE_UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
MEDIAPIPE_LOWER_INNER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MEDIAPIPE_UPPER_OUTER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
MEDIAPIPE_LOWER_OUTER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
MEDIAPIPE = Scheme(
    name="mediapipe468", n_points=468, left=234, right=454, top=195, chin=152, nose=1,
    lip_top=13, lip_bottom=14, mouth_left=61, mouth_right=291,
    jaw=(234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
         377, 400, 378, 379, 365, 397, 288, 361, 323, 454),
    lips=tuple(sorted(set(MEDIAPIPE_UPPER_INNER_LIP + MEDIAPIPE_LOWER_INNER_LIP
                          + MEDIAPIPE_UPPER_OUTER_LIP + MEDIAPIPE_LOWER_OUTER_LIP))),
)
FAN68 = Scheme(
    name="fan68", n_points=68, left=1, right=15, top=29, chin=8, nose=30,
    lip_top=62, lip_bottom=66, mouth_left=48, mouth_right=54, jaw=tuple(range(1, 16)),
    lips=tuple(range(48, 68)),  # iBUG 68: outer lip 48-59, inner lip 60-67
)
# SyncTalk_2D's own detector: only the crop anchors are known to us.
SYNCTALK110 = Scheme(name="synctalk110", n_points=110, left=1, right=31, top=52)
SCHEMES = {s.name: s for s in (MEDIAPIPE, FAN68, SYNCTALK110)}


def scheme_for(n_points: int) -> Scheme:
    for scheme in SCHEMES.values():
        if scheme.n_points == n_points:
            return scheme
    raise LandmarkError(
        f"no landmark scheme has {n_points} points; known: "
        + ", ".join(f"{s.name} ({s.n_points})" for s in SCHEMES.values())
    )


# ---------------------------------------------------------------- derived measurements

def face_width(points: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Cheek-to-cheek distance in pixels, the unit that makes measures size-independent.

    points: (..., N, 2) float32 pixel coordinates (x, y). Returns shape (...).
    """
    return np.linalg.norm(points[..., scheme.right, :] - points[..., scheme.left, :], axis=-1)


def mouth_opening(points: np.ndarray, scheme: Scheme) -> np.ndarray:
    """Inner-lip gap divided by face width; (..., N, 2) -> (...); NaN if the scheme lacks lips."""
    if not scheme.has_mouth:
        return np.full(points.shape[:-2], np.nan, np.float32)
    gap = np.abs(points[..., scheme.lip_bottom, 1] - points[..., scheme.lip_top, 1])
    return (gap / np.maximum(face_width(points, scheme), 1e-6)).astype(np.float32)


# ---------------------------------------------------------------- detectors

class Detector(Protocol):
    scheme: Scheme

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb: (H, W, 3) uint8 RGB. Returns (N, 2) float32 pixel coords, or None if no face."""
        ...

    def close(self) -> None: ...


QUIET_CALLS = 3  # process() calls after which native stderr chatter is no longer hidden


class MediapipeDetector:
    """MediaPipe Face Mesh; `video=True` tracks the face between calls (faster, steadier)."""

    scheme = MEDIAPIPE

    def __init__(self, video: bool = True, min_confidence: float = 0.5):
        # mediapipe's C++ side logs set-up chatter to stderr; keep warnings and errors only
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:
            raise LandmarkError(
                "the mediapipe backend needs mediapipe==0.10.21 (the last release with face "
                "models in the wheel, Python <= 3.12); run `make setup`, or "
                "`pip install --no-deps mediapipe==0.10.21`, or use backend='facemesh'"
            ) from exc
        # the graph's C++ side logs set-up chatter from its threads while it starts and on its
        # first runs: hidden from here to the end of the QUIET_CALLS-th call (or close)
        self._quiet = contextlib.ExitStack()
        self._quiet.enter_context(native_chatter_hidden())
        self._calls = 0
        try:
            self._mesh = face_mesh.FaceMesh(
                static_image_mode=not video, max_num_faces=1, refine_landmarks=False,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence,
            )
        except BaseException:
            self._quiet.close()
            raise

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        _check_rgb(rgb)
        try:
            result = self._mesh.process(rgb)
        finally:
            self._calls += 1
            if self._calls >= QUIET_CALLS:
                self._quiet.close()
        if not result.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = result.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * w, p.y * h) for p in lm], np.float32)
        return pts

    def close(self) -> None:
        self._quiet.close()
        self._mesh.close()


class FaceMeshDetector:
    """Face Mesh's models without the mediapipe package (`facemesh.FaceMesh`, on LiteRT)."""

    scheme = MEDIAPIPE

    def __init__(self, video: bool = True, min_confidence: float = 0.5):
        from . import facemesh

        try:
            self._mesh = facemesh.FaceMesh(video=video, min_confidence=min_confidence)
        except facemesh.FaceMeshError as exc:
            raise LandmarkError(str(exc)) from exc

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        _check_rgb(rgb)
        return self._mesh(rgb)

    def close(self) -> None:
        self._mesh.close()


FACE_ALIGNMENT_FILES = ("s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar")


class FaceAlignmentDetector:
    """FAN 68-point landmarks (package `face-alignment`), only from weights already on disk."""

    scheme = FAN68

    def __init__(self, weights_dir: str = "", device: str | None = None):
        folder = Path(weights_dir) if weights_dir else files.torch_hub_checkpoints()
        missing = [f for f in FACE_ALIGNMENT_FILES if not (folder / f).is_file()]
        if missing:
            raise LandmarkError(
                f"face_alignment backend: weights not found in {folder} (missing "
                f"{', '.join(missing)}). This workbench never downloads weights: copy them "
                "there (or set landmarks.face_alignment_dir), or use backend='mediapipe'."
            )
        try:
            import face_alignment
        except ImportError as exc:
            raise LandmarkError(
                "face_alignment backend: package missing; "
                "`pip install --no-deps face-alignment==1.5.0` (with deps it pulls GUI opencv)"
            ) from exc
        import torch

        os.environ.setdefault("TORCH_HOME", str(folder.parent.parent))
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=device or ("cuda" if torch.cuda.is_available() else "cpu"),
            compile=False,  # compile cost minutes on CPU and ran slower (docs/design.md §8)
            face_detector_kwargs={"path_to_detector": str(folder / FACE_ALIGNMENT_FILES[0])},
        )

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        _check_rgb(rgb)
        found = self._fa.get_landmarks_from_image(rgb)
        if not found:
            return None
        return np.asarray(found[0][:, :2], np.float32)

    def close(self) -> None:
        pass


BACKENDS = ("auto", "facemesh", "mediapipe", "face_alignment")


def resolve_backend(name: str) -> str:
    """The backend that `name` stands for: `auto` is `facemesh` where LiteRT is installed,
    else `mediapipe` (a set-up from before LiteRT was a dependency)."""
    if name not in BACKENDS:
        raise LandmarkError(
            f"unknown landmark backend {name!r}; use one of {', '.join(map(repr, BACKENDS))}"
        )
    if name != "auto":
        return name
    if importlib.util.find_spec("ai_edge_litert") is None and _has_mediapipe():
        return "mediapipe"
    return "facemesh"  # without either, its error says what to install


def _has_mediapipe() -> bool:
    return importlib.util.find_spec("mediapipe") is not None


def make_detector(cfg: LandmarkConfig, video: bool = True) -> Detector:
    """Build the configured backend (`resolve_backend`); unknown names list the valid ones."""
    backend = resolve_backend(cfg.backend)
    if backend == "facemesh":
        return FaceMeshDetector(video=video, min_confidence=cfg.min_confidence)
    if backend == "mediapipe":
        return MediapipeDetector(video=video, min_confidence=cfg.min_confidence)
    return FaceAlignmentDetector(cfg.face_alignment_dir)


def detect_image(rgb: np.ndarray) -> np.ndarray | None:
    """Face Mesh (the default backend) on one still image: (468, 2) float32 pixel coords, or
    None if no face."""
    detector = make_detector(LandmarkConfig(backend="auto"), video=False)
    try:
        return detector(rgb)
    finally:
        detector.close()


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")


# ---------------------------------------------------------------- .lms files

# A SyncTalk_2D-era tool reads `N.lms` with np.loadtxt and uses rows 1, 31 and 52 as crop
# anchors. We write a 110-row block in that layout first (anchors in those rows, the face
# centre elsewhere), then our detector's full point set, so both old tools and this
# workbench read the same file. Row counts tell the layouts apart (110 / 110 + N).
LEGACY_ROWS = SYNCTALK110.n_points


def write_lms(path: str | os.PathLike, points: np.ndarray, scheme: Scheme) -> None:
    """Write one frame's points as an `.lms` file: "x y" per line (see LEGACY_ROWS)."""
    if points.shape != (scheme.n_points, 2):
        raise ValueError(f"expected ({scheme.n_points}, 2) points for {scheme.name}, "
                         f"got {points.shape}")
    if scheme is SYNCTALK110:
        rows = points
    else:
        legacy = np.repeat(points.mean(axis=0, keepdims=True), LEGACY_ROWS, axis=0)
        legacy[SYNCTALK110.left] = points[scheme.left]
        legacy[SYNCTALK110.right] = points[scheme.right]
        legacy[SYNCTALK110.top] = (
            (points[scheme.left, 0] + points[scheme.right, 0]) / 2, points[scheme.top, 1]
        )
        rows = np.concatenate([legacy, points])
    Path(path).write_text("".join(f"{x:.2f} {y:.2f}\n" for x, y in rows))


def read_lms(path: str | os.PathLike) -> tuple[np.ndarray, Scheme]:
    """Read an `.lms` file written by us or by SyncTalk_2D: ((N, 2) float32, scheme)."""
    try:
        rows = np.loadtxt(path, dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as exc:
        raise LandmarkError(f"cannot read landmark file {path}: {exc}") from exc
    if rows.shape[1] != 2:
        raise LandmarkError(f"{path}: expected 'x y' per line, found {rows.shape[1]} columns")
    n = rows.shape[0]
    if n == LEGACY_ROWS:
        return rows, SYNCTALK110
    if n > LEGACY_ROWS:
        return rows[LEGACY_ROWS:], scheme_for(n - LEGACY_ROWS)
    return rows, scheme_for(n)


def fill_missing(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation over time between the nearest frames with a face."""
    if found.all():
        return points
    t = np.arange(len(found))
    good = np.flatnonzero(found)
    flat = points.reshape(len(found), -1).copy()
    for j in range(flat.shape[1]):
        flat[~found, j] = np.interp(t[~found], good, flat[good, j])
    return flat.reshape(points.shape)
