"""Held-out evaluation of a trained person, end to end (tiny preset: wiring, not quality)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synctalk_lib import evaluate, person_eval


@pytest.fixture(scope="module")
def evaluation(trained_person, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs")
    return person_eval.evaluate_person(
        trained_person.name, dataset_root=trained_person.dataset_root,
        checkpoints_root=trained_person.checkpoints_root, output_root=out, progress=False)


def test_report_compares_generated_with_the_real_tail(evaluation):
    report = json.loads(evaluation.report_path.read_text())
    assert set(report["clips"]) == {"real", "generated"}
    real, gen = (report["clips"][c]["summary"] for c in ("real", "generated"))
    assert real["frames"] == gen["frames"] == evaluation.stop - evaluation.start > 0
    for key in ("psnr", "ssim", "lmd", "opening_r", "seam"):
        assert gen[key] is not None and "psnr" not in real
    assert -15 <= gen["sync_offset"] <= 15
    assert "truth_r" in real and "truth_r" in gen  # the demo's ground truth was used
    assert report["lse"].startswith("not available")  # no syncnet_v2 weights here
    assert (evaluation.report_path.parent / "report.json").is_file()
    for key in ("sharpness_ratio", "mouth_psnr", "mouth_ssim"):
        assert gen[key] is not None
    assert "envelope_r" in gen and "spread_ratio" in gen  # None here: this tail is silent
    assert real["sharpness_ratio"] == 1.0  # the real tail is its own reference


def test_mouth_contact_sheet_shows_real_over_generated(evaluation):
    import cv2

    sheet = cv2.imread(str(evaluation.mouth_sheet))
    frames = json.loads(evaluation.report_path.read_text())["mouth_sheet_frames"]
    assert sheet is not None and sheet.shape[1] == 128 * len(frames) and len(frames) == 8
    assert all(evaluation.start <= f < evaluation.stop for f in frames)


def test_side_by_side_video_has_both_halves(evaluation):
    from synctalk_lib import media

    info = media.probe(evaluation.side_by_side)
    real = media.probe(evaluation.generated_video)
    assert info.width == 2 * real.width and info.has_audio
    assert info.n_frames_at(25) == evaluation.stop - evaluation.start


def test_generated_tail_keeps_the_real_frames_outside_the_mouth(evaluation, trained_person):
    from synctalk_lib.dataset import load_dataset
    from synctalk_lib.source import VideoFrames

    ds = load_dataset(trained_person.name, trained_person.dataset_root)
    gen = next(iter(VideoFrames.open(evaluation.generated_video, 25).iter_frames(0, 1)))
    real = next(iter(ds.frames().iter_frames(evaluation.start, 1)))
    box = ds.boxes()[evaluation.start]
    outside = np.ones(real.shape[:2], bool)
    outside[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = False
    assert np.abs(gen.astype(int) - real)[outside].mean() < 2.5  # only x264 noise


def test_best_checkpoint_is_one_call(evaluation):
    good, worse = (json.loads(evaluation.report_path.read_text()) for _ in range(2))
    good["clips"]["generated"]["summary"]["sync_offset"] = 0
    worse["checkpoint"] = "other.pt"  # more confident, but out of sync
    worse["clips"]["generated"]["summary"].update(sync_offset=7, sync_confidence=9.0)
    best = evaluate.choose_best_checkpoint([worse, good])
    assert best.checkpoint == good["checkpoint"] and best.offset == 0


def test_any_video_can_be_scored(trained_person):
    video = trained_person.dataset_root / trained_person.name / f"{trained_person.name}.mp4"
    scores = person_eval.evaluate_video(video, trained_person.name,
                                        checkpoints_root=trained_person.checkpoints_root,
                                        progress=False)
    assert scores.sync is not None and scores.n_frames == 250


def test_evaluate_command_prints_the_table_and_where_the_report_went(trained_person, tmp_path,
                                                                     capsys):
    from synctalk_lib.__main__ import main

    out = tmp_path / "outputs"
    code = main(["evaluate", "--name", trained_person.name, "--root",
                 str(trained_person.dataset_root), "--checkpoints",
                 str(trained_person.checkpoints_root), "--outputs", str(out),
                 "--checkpoint", "best", "--checkpoint", "latest", "--no-side-by-side",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = printed.splitlines()
    assert lines[0].split()[:2] == ["sync_offset", "sync_confide"]  # 12 characters each
    assert lines[1].startswith("real (ceiling)")
    folder = out / trained_person.name / "eval"
    reports = sorted(folder.glob("report_generator_*.json"))
    assert reports and all(f"report {r}" in printed for r in reports)
    assert all(f"mouths {p}" in printed for p in folder.glob("mouths_generator_*.png"))
    checkpoints = {json.loads(r.read_text())["checkpoint"] for r in reports}
    assert all(any(line.startswith(c) for line in lines) for c in checkpoints)
    assert not list(folder.glob("side_by_side_*.mp4"))
