"""The mouth against training time: every generator checkpoint of a run, scored on the person's
held-out tail (docs/real_footage.md).

Per checkpoint: training minutes so far (from its log), mouth sharpness and opening spread
relative to the real tail, opening r with the real mouth, mouth-box PSNR (landmarks found
anew on the rendered frames, by `person_eval`), and whether the generator uses the audio at all:
the mouth-box L1 on 200 training frames with their own audio against the same frames with the
audio of random other frames (equal: the audio is ignored). Writes JSON and a plot to
outputs/bench/mouth_curve_<name>_<label>.{json,png} and prints a table.

    .venv/bin/python bench/mouth_curve.py --name real_e --checkpoints checkpoints \\
        [--dataset-root dataset] [--label w1] [--every 1]

`--compare A.json B.json ...` draws runs already scored side by side against the step (one
panel per figure) into `--plot`, e.g. a variant against its baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synctalk_lib import checkpoint, data, generators, infer, person_eval, train

PROBE_FRAMES = np.arange(300, 500)  # training frames of the audio-use probe


def training_minutes(path: Path) -> float:
    """Minutes of training up to this checkpoint: the logged seconds a step, summed."""
    history = checkpoint.load_checkpoint(path, kind="generator")["extra"].get("history", [])
    minutes, last = 0.0, 0
    for entry in history:
        minutes += entry["s_per_step"] * (entry["step"] - last) / 60
        last = entry["step"]
    return minutes


def audio_use(path: Path, ds, seed: int = 0) -> tuple[float, float]:
    """Mouth-box L1 of training frames with their own audio and with shuffled audio."""
    model, cfg = generators.load_generator(path)
    audio_features = np.load(ds.paths.folder / f"aud_{cfg.model.audio_mode}.npy")
    size = cfg.model.image_size
    patches = data.model_patches(ds, size)
    x0, y0, x1, y1 = data.mouth_box(ds, size)
    reference = np.asarray(patches[infer.still_reference_index(ds, cfg)])
    frames = PROBE_FRAMES[PROBE_FRAMES < len(patches)]
    real = np.stack([patches[i] for i in frames])[:, y0:y1, x0:x1].astype(np.float32)
    shuffled = audio_features[np.random.default_rng(seed).permutation(len(audio_features))]
    errors = []
    with torch.no_grad():
        for feats in (audio_features, shuffled):
            pred = train.predict_patches(model, patches, feats, frames, cfg, reference, batch=20)
            errors.append(float(np.abs(pred[:, y0:y1, x0:x1] - real).mean() / 255))
    return errors[0], errors[1]


def heldout_mouth(path: Path, name: str, dataset_root: str, checkpoints_root: str,
                  tmp: Path) -> dict[str, float]:
    """The mouth figures of `person_eval.evaluate_person` for this checkpoint."""
    run = person_eval.evaluate_person(name, path, dataset_root, checkpoints_root, tmp,
                                      side_by_side=False, backend="torch", progress=False)
    generated = run.summary()["generated"]
    return {k: float(generated[k]) for k in ("sharpness_ratio", "spread_ratio", "opening_r",
                                             "mouth_psnr")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="JSON",
                        help="plot these scored runs against each other (no scoring)")
    parser.add_argument("--plot", type=Path, help="with --compare: the PNG to write")
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoints root")
    parser.add_argument("--dataset-root", default="dataset")
    parser.add_argument("--label", default="run", help="name of the variant, for the files")
    parser.add_argument("--every", type=int, default=1, help="score every n-th checkpoint")
    parser.add_argument("--min-step", type=int, default=0, help="skip earlier checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench")
    parser.add_argument("--keep", type=Path, help="keep the renders and mouth contact sheets "
                        "here (<keep>/<name>/eval/mouths_<checkpoint>.png); default: discarded")
    args = parser.parse_args()
    if args.compare:
        runs = {p.stem.removeprefix("mouth_curve_"): json.loads(p.read_text())
                for p in args.compare}
        out = args.plot or args.out / "mouth_curve_compare.png"
        plot_runs(runs, out)
        print(f"wrote {out}")
        return 0
    if not args.name:
        parser.error("--name is required to score a run")
    torch.set_num_threads(max(torch.get_num_threads() // 2, 1))

    from synctalk_lib.dataset import load_dataset

    ds = load_dataset(args.name, args.dataset_root)
    folder = Path(args.checkpoints) / args.name
    paths = [p for p in sorted(folder.glob(f"{generators.GENERATOR_PREFIX}[0-9]*.pt"))
             if int(p.stem.removeprefix(generators.GENERATOR_PREFIX)) >= args.min_step][:: args.every]
    if not paths:
        raise SystemExit(f"no {generators.GENERATOR_PREFIX}*.pt in {folder}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or Path(scratch)
        for path in paths:
            own, shuffled = audio_use(path, ds)
            row = {"checkpoint": path.name,
                   "step": int(path.stem.removeprefix(generators.GENERATOR_PREFIX)),
                   "minutes": round(training_minutes(path), 1),
                   "mouth_l1": own, "mouth_l1_shuffled_audio": shuffled,
                   **heldout_mouth(path, args.name, args.dataset_root, args.checkpoints, tmp)}
            rows.append(row)
            print(" ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in row.items()), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"mouth_curve_{args.name}_{args.label}"
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    plot(rows, f"{args.name} · {args.label}", stem.with_suffix(".png"))
    print(f"wrote {stem}.json and .png")
    return 0


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("sharpness_ratio", "sharpness / real"),
                       ("spread_ratio", "opening spread / real"),
                       ("opening_r", "opening r with real")):
        ax.plot(minutes, [r[key] for r in rows], marker="o", label=label)
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training minutes (as logged)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_runs(runs: dict[str, list[dict]], path: Path) -> None:
    """One panel per mouth figure, one line per run, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("sharpness_ratio", "sharpness / real"), ("spread_ratio", "opening spread / real"),
            ("opening_r", "opening r with real"))
    fig, axes = plt.subplots(1, len(keys), figsize=(11, 3.3), sharex=True)
    for ax, (key, label) in zip(axes, keys, strict=True):
        for name, rows in runs.items():
            rows = sorted(rows, key=lambda r: r["step"])
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=name)
        ax.axhline(0.8 if key == "spread_ratio" else 0.75 if key == "opening_r" else 0.7,
                   color="grey", lw=0.8, ls="--")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
