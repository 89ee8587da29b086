"""Preprocessing throughput on a 512×512 talking-face clip (target: ≥ 25 frames/s on 2 cores).

Makes a clip of the astronaut photo drifting with speech-like audio (or uses --video), runs the
whole pipeline from a clean cache and reports frames per second per stage and end to end.
Writes JSON to outputs/bench/preprocess.json and prints a table.

    .venv/bin/python bench/preprocess.py [--seconds 20] [--video path.mp4]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synctalk_lib import media, preprocess
from synctalk_lib.config import get_config


def make_clip(path: Path, seconds: float) -> None:
    import cv2
    from skimage import data

    image = data.astronaut()
    n = int(seconds * 25)
    t = np.arange(int(seconds * 16000)) / 16000
    voice = 0.2 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
    with media.VideoWriter(path, fps=25, preset="ultrafast", audio=voice.astype(np.float32)) as w:
        for i in range(n):
            m = np.float32([[1, 0, 4 * np.sin(i / 11)], [0, 1, 3 * np.cos(i / 17)]])
            w.write(cv2.warpAffine(image, m, (512, 512), borderMode=cv2.BORDER_REFLECT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--video", type=Path, help="benchmark this clip instead")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "preprocess.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-preprocess-"))
    try:
        (work / "clip").mkdir()
        clip = work / "clip" / "clip.mp4"
        if args.video:
            shutil.copy(args.video, clip)
        else:
            make_clip(clip, args.seconds)
        info = media.probe(clip)
        start = time.perf_counter()
        ds = preprocess.preprocess("clip", root=work, cfg=get_config("cpu"), progress=False)
        total = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    n = ds.n_frames
    stages = {k: v for k, v in ds.meta["timings"].items() if v}
    result = {
        "clip": {"width": info.width, "height": info.height, "frames": n,
                 "seconds": n / 25},
        "total_s": round(total, 2), "frames_per_s": round(n / total, 1),
        "stages_s": stages,
        "stage_frames_per_s": {k: round(n / v, 1) for k, v in stages.items()},
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"preprocess {info.width}x{info.height}, {n} frames, {_cpus()} cpus")
    print(f"{'stage':<12}{'seconds':>9}{'frames/s':>10}")
    for k, v in stages.items():
        print(f"{k:<12}{v:>9.2f}{n / v:>10.1f}")
    print(f"{'end to end':<12}{total:>9.2f}{n / total:>10.1f}   (target >= 25)")
    print(f"wrote {args.out}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


if __name__ == "__main__":
    sys.exit(main())
