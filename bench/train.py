"""Training throughput (frames/s) and peak memory per preset, through the real training loop.

Each preset runs in its own process (so peak RSS is its own) on a short synthetic talking-face
clip: `train.train_generator` with every loss term on (a randomly initialised SyncNet stands in
for a trained one: the cost is the same). The first step is warm-up; the rest are timed.
`hd328` also runs SyncTalk_2D's own step shape (batch 8 single frames, no sync/temporal
terms), the figure docs/design.md §9 gives for the reference (11.5-22.6 s per step on this CPU).
Writes JSON to outputs/bench/train.json and prints a table.

    .venv/bin/python bench/train.py [--presets tiny cpu hd328] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# SyncTalk_2D, batch 8, L1 + Adam, eager fp32 (docs/design.md §9)
REFERENCE_S_PER_STEP = (11.5, 22.6)
CASES = {
    "tiny": {},
    # the mouth discriminator's term on from the first step (its default start is step 200),
    # and the same step without it: the term's cost
    "cpu": {"train.gan_start": 0},
    "cpu-no-gan": {"train.gan_weight": 0.0},
    "hd328": {},
    "hd328-reference-step": {"train.window": 1, "train.batch_size": 8,
                             "train.perceptual_weight": 0.0},
    "reference-loop": {},  # not a preset: SyncTalk_2D's step re-created, see run_reference_loop
}


def make_dataset(root: Path) -> None:
    from preprocess import make_clip  # bench/preprocess.py

    from synctalk_lib import preprocess
    from synctalk_lib.config import get_config

    (root / "clip").mkdir(parents=True)
    make_clip(root / "clip" / "clip.mp4", 8.0)
    preprocess.preprocess("clip", root=root, cfg=get_config("cpu"), progress=False)


def run_reference_loop(steps: int) -> dict:
    """SyncTalk_2D's training step re-created: U-Net 328 in NCHW, batch 8, L1 + Adam (lr 1e-3),
    eager fp32: the baseline for our step in the same run (docs/design.md §9 measured the real one
    at 11.5-22.6 s on this CPU)."""
    import time

    import torch

    from synctalk_lib import unet
    from synctalk_lib.config import get_config

    cfg = get_config("hd328")
    model = unet.Generator.from_config(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(8, 6, 320, 320), torch.rand(8, 3, 320, 320)
    audio = torch.rand(8, *unet.audio_feature_shape("ave"))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(model(x, audio), y)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times[1:])) if len(times) > 1 else times[0]
    return {"case": "reference-loop", "threads": torch.get_num_threads(), "frames_per_step": 8,
            "s_per_step": round(step_s, 3), "frames_per_s": round(8 / step_s, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def run_case(case: str, root: Path, steps: int) -> dict:
    import torch

    if case == "reference-loop":
        return run_reference_loop(steps)

    from synctalk_lib import dataset, syncnet, train, unet
    from synctalk_lib.config import get_config

    preset = case.split("-")[0]
    cfg = get_config(preset, {**CASES[case], "train.heldout_fraction": 0.0,
                              "train.val_fraction": 0.2, "train.val_every": 10**6,
                              "train.save_every": 10**6})
    ds = dataset.load_dataset("clip", root)
    # random features of the width the resolved audio mode reads (cpu: whisper when installed)
    dim = int(np.prod(unet.audio_feature_shape(cfg.model.audio_mode, cfg.model.audio_dim)))
    feats = np.random.default_rng(0).normal(
        size=(ds.n_frames, dim // unet.AUDIO_WINDOW)).astype(np.float32)
    expert = syncnet.SyncNet.from_config(cfg) if cfg.train.window > 1 else None
    out = Path(tempfile.mkdtemp(prefix=f"bench-train-{case}-"))
    result = train.train_generator(ds, cfg, out, feats, expert=expert, steps=steps,
                                   progress=False, log_every=1)
    times = [h["s_per_step"] for h in result.history]
    step_s = float(np.median(times[1:])) if len(times) > 1 else times[0]
    frames = cfg.train.batch_size * cfg.train.window
    return {"case": case, "threads": torch.get_num_threads(), "frames_per_step": frames,
            "s_per_step": round(step_s, 3), "frames_per_s": round(frames / step_s, 2),
            "first_step_s": round(times[0], 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=6,
                        help="steps per case; the first is warm-up, the median of the rest counts")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "train.json")
    args = parser.parse_args()
    if args.one:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args.one, args.root, args.steps)))
        return 0
    sys.path.insert(0, str(Path(__file__).parent))
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    make_dataset(root)
    rows = []
    for case in args.presets:
        done = subprocess.run([sys.executable, __file__, "--one", case, "--root", str(root),
                               "--steps", str(args.steps)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:  # e.g. killed for memory: report it and go on
            print(f"{case}: failed ({done.returncode}): {done.stderr.strip()[-300:]}")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ref = next((r for r in rows if r["case"] == "hd328-reference-step"), None)
    loop = next((r for r in rows if r["case"] == "reference-loop"), None)
    if ref:
        ref["vs_reference"] = [round(r / ref["s_per_step"], 2) for r in REFERENCE_S_PER_STEP]
    if ref and loop:
        ref["vs_reference_loop"] = round(loop["s_per_step"] / ref["s_per_step"], 2)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'case':<22}{'frames/step':>12}{'s/step':>9}{'frames/s':>10}{'peak MB':>9}")
    for r in rows:
        print(f"{r['case']:<22}{r['frames_per_step']:>12}{r['s_per_step']:>9.2f}"
              f"{r['frames_per_s']:>10.2f}{r['peak_rss_mb']:>9}")
    if ref:
        lo, hi = ref["vs_reference"]
        print(f"hd328 reference-shaped step vs SyncTalk_2D's 11.5-22.6 s: {lo}x-{hi}x "
              "(target >= 1.5x; reference measured on this CPU, docs/design.md §9)")
    if ref and loop:
        print(f"hd328 reference-shaped step vs the re-created reference loop in this run: "
              f"{ref['vs_reference_loop']}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
