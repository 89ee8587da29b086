"""Speed and output of this checkout's renderer against another checkout's (normally main),
in one run on the same person, audio and machine, so the ratio holds on a busy machine too.

Each round renders the same audio once with each checkout (alternating, each in its own
process after a warm-up render), then the two videos are compared frame by frame (PSNR over
the whole frame, and over the face box where the paste-back works). Reuses bench/infer.py's
set-up: the demo person at 512² and 1080p with a random-weight generator.

    .venv/bin/python bench/compare_main.py --other ../main [--sources 1080] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def child(code_root: Path, work: Path, preset: str, source: str, seconds: float,
          out: Path, crf: int | None = None) -> dict:
    """Render with the synctalk_lib of `code_root` (this process imports nothing else)."""
    sys.path.insert(0, str(code_root))
    import torch

    from synctalk_lib import infer

    torch.set_num_threads(2)
    avatar = infer.Avatar.load(f"p{source}", dataset_root=work / "dataset",
                               checkpoints_root=work / "checkpoints" / preset,
                               output_root=work / "outputs", backend="onnx",
                               overrides=None if crf is None else {"infer.crf": crf})
    wav = work / f"speech_{seconds:g}s.wav"
    avatar.render(work / "speech_1s.wav", work / f"warm_{out.name}", progress=False)
    cpu0, start = _cpu_seconds(), time.perf_counter()
    result = avatar.render(wav, out, progress=False)
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    return {"frames": result.n_frames, "seconds": round(wall, 2),
            "fps": round(result.n_frames / wall, 2),
            "cpu_ms_per_frame": round(1000 * cpu / result.n_frames, 1),
            "templates": result.templates}


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg): what a render costs the
    machine, steadier than wall time when other work shares the cores."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                 resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def compare(ours: Path, other: Path, boxes: np.ndarray, templates: list[int]) -> dict:
    """PSNR of our frames against the other checkout's: per frame whole and in the face box."""
    sys.path.insert(0, str(ROOT))
    from synctalk_lib import media

    whole, face = [], []
    for t, (a, b) in enumerate(zip(media.read_frames(ours), media.read_frames(other),
                                   strict=True)):
        x0, y0, x1, y1 = boxes[templates[t]].round().astype(int)
        whole.append(psnr(a, b))
        face.append(psnr(a[y0:y1, x0:x1], b[y0:y1, x0:x1]))
    return {"psnr_min": round(min(whole), 2), "psnr_mean": round(float(np.mean(whole)), 2),
            "face_psnr_min": round(min(face), 2),
            "face_psnr_mean": round(float(np.mean(face)), 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, required=True, help="the other checkout's root")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--sources", nargs="+", default=["512", "1080"])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, help="a bench/infer.py set-up to reuse")
    parser.add_argument("--crf", type=int, help="x264 CRF of both renders (0: lossless, so "
                        "the PSNR sees the two pipelines and not x264's choices)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare_main.json")
    args = parser.parse_args()
    if args.child:
        code_root, source, out = args.child
        print(json.dumps(child(Path(code_root), args.work, args.preset, source, args.seconds,
                               Path(out), args.crf)))
        return 0
    sys.path.insert(0, str(ROOT / "bench"))
    import infer as bench_infer  # bench/infer.py: set-up and the machine's description
    sys.path.insert(0, str(ROOT))
    from synctalk_lib.dataset import load_dataset

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-compare-"))
    if not (work / "dataset").is_dir():
        bench_infer.make_people(work, [args.preset], args.sources)
    for seconds in (1.0, args.seconds):
        bench_infer.speech(work, seconds)
    started = bench_infer.machine()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    rows = []
    for source in args.sources:
        runs: dict[str, list[dict]] = {"ours": [], "other": []}
        for r in range(args.rounds):
            for tag, root in (("ours", ROOT), ("other", args.other.resolve())):
                out = work / f"{tag}_{source}_{r}.mp4"
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(root), source, str(out),
                     "--work", str(work), "--preset", args.preset, "--seconds",
                     str(args.seconds), "--other", str(args.other),
                     *([] if args.crf is None else ["--crf", str(args.crf)])],
                    capture_output=True, text=True, check=False, env=env)
                if done.returncode:
                    raise SystemExit(f"{tag} {source}: {done.stderr.strip()[-1500:]}")
                runs[tag].append({**json.loads(done.stdout.splitlines()[-1]), "path": out})
                print(f"  {source} round {r} {tag}: {runs[tag][-1]['fps']} fps, "
                      f"{runs[tag][-1]['cpu_ms_per_frame']} ms CPU a frame", flush=True)
        ours, other = runs["ours"][-1], runs["other"][-1]
        if ours["templates"] != other["templates"]:
            raise SystemExit(f"{source}: the two checkouts chose different template frames")
        boxes = load_dataset(f"p{source}", work / "dataset").boxes()
        fps = {tag: [x["fps"] for x in runs[tag]] for tag in runs}
        cpu = {tag: [x["cpu_ms_per_frame"] for x in runs[tag]] for tag in runs}
        rows.append({"source": source, "preset": args.preset, "audio_s": args.seconds,
                     "crf": args.crf,
                     "fps_ours": fps["ours"], "fps_other": fps["other"],
                     "ratio": round(float(np.median(fps["ours"]) / np.median(fps["other"])), 2),
                     "cpu_ms_per_frame_ours": cpu["ours"], "cpu_ms_per_frame_other": cpu["other"],
                     "cpu_ratio": round(float(np.median(cpu["other"]) / np.median(cpu["ours"])),
                                        2),
                     **compare(ours["path"], other["path"], boxes, ours["templates"])})
        print(json.dumps(rows[-1]))
    result = {"machine": started, "other": str(args.other), "file": args.out.name,
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
