"""Evaluate a trained person: re-render its held-out tail and score it against the real one.

The last `train.heldout_fraction` of the recording was never trained on. Its own audio drives
the generator over its own frames (the templates are those very frames), so the real tail is
the exact target: sync, PSNR/SSIM, landmark distance and mouth-opening correlation compare
like with like, and the real tail's own scores are the ceiling. On the demo, the ground-truth
mouth opening (`mouth_open.npy`) is an extra check. `evaluate_video` scores any other video
(a SyncTalk_2D or Wav2Lip output, say) with the same networks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import evaluate, files, infer, media, offset_opinion, syncnet
from .offset_opinion import OffsetOpinion, SyncReading
from .source import VideoFrames

log = logging.getLogger(__name__)


@dataclass
class PersonEvaluation:
    """What `evaluate_person` made, for plots and the preview widget."""

    report: dict[str, Any]
    report_path: Path
    side_by_side: Path | None
    generated_video: Path
    mouth_sheet: Path  # real mouths above, generated below (outputs/<name>/eval/mouths_*.png)
    real: evaluate.ClipScores
    generated: evaluate.ClipScores
    start: int  # held-out frames [start, stop) of the recording
    stop: int
    truth: np.ndarray | None  # demo ground-truth opening of those frames, if any
    # the recording check's audio offset beside the SyncNets' readings of the real tail
    audio_offset: OffsetOpinion | None = None

    def summary(self) -> dict[str, dict[str, Any]]:
        return {c: self.report["clips"][c]["summary"] for c in ("real", "generated")}


# the summary's columns shown by `format_table`, in order; those no run has are left out
TABLE_COLUMNS = ("sync_offset", "sync_confidence", "lse_d", "lse_c", "envelope_r",
                 "sharpness_ratio", "spread_ratio", "mouth_psnr", "psnr", "ssim", "lmd",
                 "opening_r", "truth_r", "silence_pixel_change", "jitter", "seam")


def format_table(runs: Sequence[PersonEvaluation]) -> str:
    """The runs' summaries as a fixed-width text table: the real tail (the ceiling) first,
    then one row per checkpoint; "-" where a score is not available. Under it, the
    recording check's audio offset beside the SyncNets' readings of the real tail (the same
    for every checkpoint)."""
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        summary = run.summary()
        rows["real (ceiling)"] = summary["real"]
        rows[run.report["checkpoint"]] = summary["generated"]
    columns = [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows.values())]
    lines = [f"{'':<24}" + "".join(f"{c[:12]:>13}" for c in columns)]
    for label, r in rows.items():
        lines.append(f"{label:<24}" + "".join(
            "{:>13}".format("-" if r.get(c) is None else f"{r[c]:.4g}") for c in columns))
    opinion = next((run.audio_offset for run in runs if run.audio_offset is not None), None)
    if opinion is not None:
        lines += opinion.lines()
    return "\n".join(lines)


def _v2_network(path: str | os.PathLike | None, device: str | None):
    """syncnet_python's network if its weights are on disk; None (with the reason) if not."""
    try:
        return evaluate.load_syncnet_v2(path, device=device)
    except evaluate.SyncNetV2WeightsError as exc:
        log.info("LSE-D / LSE-C skipped: %s", exc)
        return None


def evaluate_person(name: str, checkpoint: str | Path | None = None,
                    dataset_root: str | Path = "dataset",
                    checkpoints_root: str | Path = "checkpoints",
                    output_root: str | Path = "outputs",
                    syncnet_v2_path: str | Path | None = None, side_by_side: bool = True,
                    backend: str | None = None, device: str | None = None,
                    progress: bool = True, overrides: dict | None = None) -> PersonEvaluation:
    """Score one checkpoint (default: best) on the held-out tail; writes
    outputs/<name>/eval/report_<checkpoint>.json (and report.json, the latest run), the
    generated tail, a real | generated video and a contact sheet of real and generated mouths
    (`mouths_<checkpoint>.png`). overrides: inference settings to compare,
    e.g. {"infer.pause_feature": "digital"}."""
    avatar = infer.Avatar.load(name, dataset_root=dataset_root,
                               checkpoints_root=checkpoints_root, output_root=output_root,
                               checkpoint=checkpoint, backend=backend, device=device,
                               overrides=overrides, progress=progress)
    ds, cfg = avatar.dataset, avatar.cfg
    start, stop = evaluate.heldout_range(ds, cfg)
    hop = cfg.media.sample_rate // cfg.media.fps
    wav = ds.wav()[start * hop: stop * hop]
    folder = Path(output_root) / name / "eval"
    tag = avatar.checkpoint.stem
    generated_video = avatar.render(wav, folder / f"heldout_{tag}.mp4",
                                    template_indices=range(start, stop), progress=progress,
                                    allow_silent=True).path
    real = evaluate.dataset_clip(ds, start, stop, name="real", face_crops=True,
                                 progress=progress)
    frames = VideoFrames.open(generated_video, cfg.media.fps)
    gen = evaluate.make_clip(frames, media.load_audio(generated_video), boxes=real.boxes,
                             cfg=ds.config, name="generated", face_crops=True,
                             progress=progress)
    net = syncnet.load_syncnet(avatar.checkpoint.parent / "syncnet.pt", device=device)
    net_v2 = _v2_network(syncnet_v2_path, device)
    mask = np.stack([avatar.paste_masks[t] for t in range(start, stop)])
    real_scores = evaluate.evaluate_clip(real, net=net, net_v2=net_v2, progress=progress)
    gen_scores = evaluate.evaluate_clip(gen, real=real, net=net, net_v2=net_v2,
                                        paste_mask=mask, background=real, progress=progress)
    truth = _ground_truth(ds.paths.folder, start, stop)
    if truth is not None:
        for scores in (real_scores, gen_scores):
            corr = evaluate.ground_truth_correlation(scores.opening, truth)
            scores.extra["truth_r"] = corr.r
    opinion = _audio_offset(ds.meta, start, stop, real_scores,
                            offset_opinion.min_tail_frames(ds.config))
    extra = {"heldout_frames": [start, stop], "preset": cfg.preset,
             "backend": avatar.backend.describe(),
             "lse": "syncnet_v2" if net_v2 is not None else "not available (no weights)",
             "overrides": dict(overrides or {}), "audio_offset": opinion.to_dict()}
    sheet, shown = evaluate.mouth_sheet(
        real.patches(), gen.patches(),
        evaluate.mouth_region(real.lips(), cfg.crop.inner, cfg.crop.ring), real_scores.opening)
    sheet_path = folder / f"mouths_{tag}.png"
    with files.atomic_path(sheet_path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    extra["mouth_sheet_frames"] = [int(start + i) for i in shown]
    report = evaluate.make_report([real_scores, gen_scores], name, avatar.checkpoint.name, extra)
    path = evaluate.write_report(report, name, output_root, f"report_{tag}.json")
    evaluate.write_report(report, name, output_root)
    video = None
    if side_by_side:
        video = evaluate.write_side_by_side(
            folder / f"side_by_side_{tag}.mp4", ds.frames().iter_frames(start, stop - start),
            VideoFrames.open(generated_video, cfg.media.fps).iter_frames(), wav,
            fps=cfg.media.fps, preset="veryfast")
    return PersonEvaluation(report, path, video, generated_video, sheet_path, real_scores,
                            gen_scores, start, stop, truth, opinion)


def _audio_offset(meta: dict[str, Any], start: int, stop: int, real: evaluate.ClipScores,
                  min_frames: int) -> OffsetOpinion:
    """The check's offset (meta.json) beside the SyncNets' offsets of the real tail."""
    def reading(score: evaluate.SyncScore | None) -> SyncReading | None:
        return None if score is None else SyncReading(score.offset, score.confidence)

    return offset_opinion.from_meta(meta, (start, stop), reading(real.sync),
                                    reading(real.sync_v2), min_frames=min_frames)


def _ground_truth(folder: Path, start: int, stop: int) -> np.ndarray | None:
    """The demo's true mouth opening of frames [start, stop), when the dataset is a demo."""
    path = folder / "mouth_open.npy"
    return np.load(path)[start:stop] if path.is_file() else None


def evaluate_video(video: str | Path, name: str, audio: str | Path | None = None,
                   checkpoints_root: str | Path = "checkpoints",
                   syncnet_v2_path: str | Path | None = None, device: str | None = None,
                   progress: bool = True) -> evaluate.ClipScores:
    """Sync scores of any video of person `name` (its own SyncNet; LSE too when available).

    audio: a separate audio file (default: the video's own track).
    """
    frames = VideoFrames.open(video, 25)
    wav = media.load_audio(audio or video)
    clip = evaluate.make_clip(frames, wav, name=Path(video).stem, face_crops=True,
                              progress=progress)
    net = syncnet.load_syncnet(Path(checkpoints_root) / name / "syncnet.pt", device=device)
    return evaluate.evaluate_clip(clip, net=net, net_v2=_v2_network(syncnet_v2_path, device),
                                  progress=progress)
