"""The mouth against training time: every generator checkpoint of a run, scored on the person's
held-out tail (docs/real_footage.md).

Per checkpoint: training minutes so far (from its log), mouth sharpness and opening spread
relative to the real tail, opening r with the real mouth, mouth-box PSNR (landmarks found
anew on the rendered frames, as `person_eval`), and whether the generator uses the audio at all:
the mouth-box L1 on 200 training frames with their own audio against the same frames with the
audio of random other frames (equal: the audio is ignored). Writes JSON and a plot to
outputs/bench/mouth_curve_<name>_<label>.{json,png} and prints a table.

    .venv/bin/python bench/mouth_curve.py --name real_e --checkpoints checkpoints \\
        [--dataset-root dataset] [--label w1] [--every 1]
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

from synctalk_lib import checkpoint, crop, data, evaluate, infer, media, train, unet
from synctalk_lib.source import VideoFrames

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
    model, cfg = train.load_generator(path)
    features = np.load(ds.paths.folder / f"aud_{cfg.model.audio_mode}.npy")
    size = cfg.model.image_size
    patches = data.model_patches(ds, size)
    x0, y0, x1, y1 = data.mouth_box(ds, size)
    ref = torch.from_numpy(patches[infer.still_reference_index(ds, cfg)]).permute(2, 0, 1)
    mx0, my0, mx1, my1 = crop.mask_rect(cfg.crop, size)
    frames = PROBE_FRAMES[PROBE_FRAMES < len(patches)]
    shuffled = features[np.random.default_rng(seed).permutation(len(features))]
    errors = []
    for feats in (features, shuffled):
        total = 0.0
        for start in range(0, len(frames), 20):
            idx = frames[start: start + 20]
            target = torch.from_numpy(np.stack([patches[i] for i in idx])).permute(0, 3, 1, 2)
            target = target.float() / 255
            masked = target.clone()
            masked[:, :, my0:my1, mx0:mx1] = 0
            audio = torch.from_numpy(np.stack([data.feature_window(feats, int(i)) for i in idx]))
            with torch.no_grad():
                pred = model(torch.cat([(ref.float() / 255).expand_as(target), masked], 1),
                             unet.audio_window_to_input(audio.float(), cfg.model.audio_mode))
            total += (pred - target)[:, :, y0:y1, x0:x1].abs().mean().item() * len(idx)
        errors.append(total / len(frames))
    return errors[0], errors[1]


def heldout_mouth(path: Path, name: str, dataset_root: str, checkpoints_root: str,
                  tmp: Path) -> dict[str, float]:
    avatar = infer.Avatar.load(name, dataset_root=dataset_root, checkpoints_root=checkpoints_root,
                               output_root=str(tmp), checkpoint=path, backend="torch")
    ds, cfg = avatar.dataset, avatar.cfg
    start, stop = evaluate.heldout_range(ds, cfg)
    hop = cfg.media.sample_rate // cfg.media.fps
    wav = np.asarray(ds.wav()[start * hop: stop * hop], np.float32)
    video = tmp / f"{path.stem}.mp4"
    avatar.render(wav, video, template_indices=range(start, stop), progress=False,
                  allow_silent=True)
    real = evaluate.dataset_clip(ds, start, stop, progress=False)
    gen = evaluate.make_clip(VideoFrames.open(video, cfg.media.fps), media.load_audio(video),
                             boxes=real.boxes, cfg=ds.config, name="generated", progress=False)
    summary = evaluate.evaluate_clip(gen, real=real, progress=False).summary()
    return {k: float(summary[k]) for k in ("sharpness_ratio", "spread_ratio", "opening_r",
                                           "mouth_psnr")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--checkpoints", default="checkpoints", help="checkpoints root")
    parser.add_argument("--dataset-root", default="dataset")
    parser.add_argument("--label", default="run", help="name of the variant, for the files")
    parser.add_argument("--every", type=int, default=1, help="score every n-th checkpoint")
    parser.add_argument("--min-step", type=int, default=0, help="skip earlier checkpoints")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench")
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads() // 2, 1))

    from synctalk_lib.preprocess import load_dataset

    ds = load_dataset(args.name, args.dataset_root)
    folder = Path(args.checkpoints) / args.name
    paths = [p for p in sorted(folder.glob(f"{train.GENERATOR_PREFIX}[0-9]*.pt"))
             if int(p.stem.removeprefix(train.GENERATOR_PREFIX)) >= args.min_step][:: args.every]
    if not paths:
        raise SystemExit(f"no {train.GENERATOR_PREFIX}*.pt in {folder}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            own, shuffled = audio_use(path, ds)
            row = {"checkpoint": path.name,
                   "step": int(path.stem.removeprefix(train.GENERATOR_PREFIX)),
                   "minutes": round(training_minutes(path), 1),
                   "mouth_l1": own, "mouth_l1_shuffled_audio": shuffled,
                   **heldout_mouth(path, args.name, args.dataset_root, args.checkpoints,
                                   Path(tmp))}
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


if __name__ == "__main__":
    sys.exit(main())
