"""The `facemesh` landmark backend (LiteRT) against `mediapipe` on real clips, every frame.

Both backends run in video (tracking) mode in the same process on the same decoded frames,
one after the other per frame, so load on the machine hits both alike. Per clip:
- mean / p95 point distance: |facemesh - mediapipe| over the 468 points of every frame where
  both found a face, in % of mediapipe's face width (`landmarks.face_width`); p95 is over all
  points of all those frames.
- jitter: std of the frame-to-frame change of the crop box (`crop.boxes_from_landmarks`, before
  smoothing; x0, y0, x1, y1 pooled), in % of the clip's median face width, per backend.
- ms/frame per backend (detector call only, decoding excluded).
Needs an environment with both mediapipe and ai-edge-litert (Python <= 3.12). Writes JSON to
outputs/bench/landmarks.json and prints a Markdown table.

    .venv/bin/python bench/landmarks.py [--clips a b c d e f] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synctalk_lib import crop, landmarks, media
from synctalk_lib.config import LandmarkConfig

BACKENDS = ("mediapipe", "facemesh")


def run_clip(path: Path) -> dict:
    """Both backends over every frame of one clip (source frame rate)."""
    detectors = {b: landmarks.make_detector(LandmarkConfig(backend=b), video=True)
                 for b in BACKENDS}
    points: dict[str, list] = {b: [] for b in BACKENDS}
    seconds = dict.fromkeys(BACKENDS, 0.0)
    try:
        for rgb in media.read_frames(path, fps=None):
            for b, detect in detectors.items():
                t0 = time.perf_counter()
                pts = detect(rgb)
                seconds[b] += time.perf_counter() - t0
                points[b].append(pts)
    finally:
        for detect in detectors.values():
            detect.close()
    n = len(points["mediapipe"])
    both = [i for i in range(n) if all(points[b][i] is not None for b in BACKENDS)]
    ref = np.stack([points["mediapipe"][i] for i in both])  # (F, 468, 2)
    new = np.stack([points["facemesh"][i] for i in both])
    width = landmarks.face_width(ref, landmarks.MEDIAPIPE)  # (F,)
    dist = 100 * np.linalg.norm(new - ref, axis=-1) / width[:, None]  # (F, 468) % face width
    row = {"clip": path.stem, "frames": n, "both_found": len(both),
           "mean_pct": float(dist.mean()), "p95_pct": float(np.percentile(dist, 95)),
           "max_pct": float(dist.max()), "face_width_px": float(np.median(width))}
    for b in BACKENDS:
        row[f"found_{b}"] = sum(p is not None for p in points[b])
        row[f"jitter_{b}_pct"] = jitter(points[b], float(np.median(width)))
        row[f"ms_{b}"] = 1000 * seconds[b] / n
    return row


def jitter(points: list, face_width: float) -> float:
    """Std of the frame-to-frame change of the raw crop box over runs of found frames, in %
    of the face width."""
    steps = []
    for a, b in itertools.pairwise(points):
        if a is not None and b is not None:
            boxes = crop.boxes_from_landmarks(np.stack([a, b]), landmarks.MEDIAPIPE)
            steps.append(boxes[1] - boxes[0])
    return float(100 * np.std(np.concatenate(steps)) / face_width)


def table(rows: list[dict]) -> str:
    head = ("| clip | frames (both found) | mean % fw | p95 % fw | max % fw | jitter mp / fm "
            "% fw | ms/frame mp / fm |\n|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['clip']} | {r['frames']} ({r['both_found']}) | {r['mean_pct']:.3f} | "
        f"{r['p95_pct']:.3f} | {r['max_pct']:.3f} | {r['jitter_mediapipe_pct']:.3f} / "
        f"{r['jitter_facemesh_pct']:.3f} | {r['ms_mediapipe']:.1f} / {r['ms_facemesh']:.1f} |\n"
        for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", nargs="+", default=list("abcdef"), help="real_talk_<x>.mp4")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "landmarks.json")
    args = p.parse_args()
    rows = []
    for c in args.clips:
        rows.append(run_clip(args.data / f"real_talk_{c}.mp4"))
        print(json.dumps(rows[-1]), flush=True)
    env = {"python": platform.python_version(), "machine": platform.machine(),
           **{pkg: version(pkg) for pkg in ("mediapipe", "ai-edge-litert", "opencv-python-headless",
                                            "numpy")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    print(env)
    print(table(rows))


if __name__ == "__main__":
    main()
