"""Which Whisper layers and windows say most about the mouth of any voice (docs/whisper.md).

A linear probe: ridge regression from the features of ±2 frames to the real mouth opening
(landmarks of the recording, standardised per clip), trained on the first 90 % of one shared
clip and scored (Pearson r at the best lag within ±3 frames) on its held-out tail and on every
other shared clip. Needs ../shared/data; preprocesses the clips into --dataset-root once.
Writes JSON to outputs/bench/whisper_probe.json and prints a table.

    .venv/bin/python bench/whisper_probe.py [--dataset-root /tmp/probe-data]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLIPS = ["real_talk_a", "real_talk_b", "real_talk_c", "real_talk_d", "real_talk_e",
         "real_talk_f"]
TRAIN_ON = ["real_talk_d", "real_talk_e"]  # the two long clips
VARIANTS = {  # name: (layers, hop_frames, context_frames)
    "layer 1": ((1,), 50, 25), "layer 2": ((2,), 50, 25), "layer 3": ((3,), 50, 25),
    "last": ((-1,), 50, 25), "2 + last": ((2, -1), 50, 25), "all": ((1, 2, 3, -1), 50, 25),
    "1 + 2, 4 s windows": ((1, 2), 100, 50), "last, 1 s windows": ((-1,), 25, 12),
    "last, 30 s windows": ((-1,), 650, 50), "layer 2, 2 s context": ((2,), 50, 50),
    "layer 2, 30 s windows": ((2,), 650, 50),
}


def with_context(x: np.ndarray, k: int = 2) -> np.ndarray:
    idx = np.clip(np.arange(len(x))[:, None] + np.arange(-k, k + 1)[None], 0, len(x) - 1)
    return x[idx].reshape(len(x), -1)


def ridge(x: np.ndarray, y: np.ndarray, lam: float):
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return lambda a: ((a - mu) / sd) @ w


def best_r(p: np.ndarray, y: np.ndarray, max_lag: int = 3) -> float:
    rs = []
    for lag in range(-max_lag, max_lag + 1):
        a = p[max(0, lag): len(p) + min(0, lag)]
        b = y[max(0, -lag): len(y) + min(0, -lag)]
        rs.append(np.corrcoef(a, b)[0, 1])
    return float(max(rs))


def main() -> int:
    from synctalk_lib import dataset, landmarks, preprocess, whisper
    from synctalk_lib.config import WhisperConfig, get_config

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--dataset-root", type=Path, default=Path("/tmp/whisper-probe-data"))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" /
                        "whisper_probe.json")
    args = parser.parse_args()
    if not args.shared.is_dir():
        print(f"no {args.shared}: the probe needs the shared sample clips")
        return 1
    data = {}
    for clip in CLIPS:
        if not (args.dataset_root / clip / "meta.json").is_file():
            preprocess.preprocess(clip, root=args.dataset_root, cfg=get_config("cpu"),
                                  video=args.shared / f"{clip}.mp4", progress=False)
        ds = dataset.load_dataset(clip, args.dataset_root)
        opening = landmarks.mouth_opening(ds.points(), ds.scheme).astype(np.float64)
        opening = np.where(np.isnan(opening), np.nanmedian(opening), opening)
        data[clip] = (ds, (opening - opening.mean()) / (opening.std() + 1e-9))
    encoder = whisper.load_encoder(whisper.resolve_source())
    rows = []
    for name, (layers, hop, context) in VARIANTS.items():
        extract = whisper.WhisperFeatures(encoder, WhisperConfig(
            layers=layers, hop_frames=hop, context_frames=context))
        feats = {c: with_context(extract(ds.wav(), ds.n_frames)) for c, (ds, _) in data.items()}
        row = {"variant": name, "layers": layers, "hop": hop, "context": context}
        for train in TRAIN_ON:
            x, y = feats[train], data[train][1]
            cut = int(0.9 * len(x))
            model = ridge(x[:cut], y[:cut], lam=5.0 * x.shape[1])
            others = [best_r(model(feats[c]), data[c][1]) for c in CLIPS if c != train]
            row[train] = {"own_tail": best_r(model(x[cut:]), y[cut:]),
                          "others_mean": float(np.mean(others)),
                          "others_min": float(np.min(others))}
        rows.append(row)
        print(f"{name:<24}" + "".join(
            f"  {t[-1]}: own {row[t]['own_tail']:.2f} others {row[t]['others_mean']:.2f}"
            f" (min {row[t]['others_min']:.2f})" for t in TRAIN_ON), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
