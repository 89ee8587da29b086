"""The recording check's audio offset beside SyncNet's reading of the held-out tail: shown
after training and by `evaluate`, and a sound shifted after training shows the disagreement."""

from __future__ import annotations

import json

import pytest

from synctalk_lib import offset_opinion, person_eval, preprocess, syncnet, train
from synctalk_lib.config import get_config
from synctalk_lib.dataset import load_dataset
from synctalk_lib.offset_opinion import SyncReading

META = {"av_offset": {"setting": "auto", "applied": 3, "measured": 3, "confidence": 7.4,
                      "halves": [3, 2]}}


def test_a_tail_read_in_sync_says_the_correction_holds():
    opinion = offset_opinion.from_meta(META, (1350, 1500), SyncReading(0, 0.41))
    assert opinion.holds and opinion.left == 0 and opinion.v2_agrees is None
    first, second = opinion.lines()
    assert first.startswith("audio offset: recording check +3 frames, confidence 7.4, "
                            "+3 applied (media.av_offset=auto)")
    assert "held-out tail (frames 1350-1500) +0 (confidence 0.41)" in first
    assert "holds" in first and second.startswith("syncnet_v2: not available")


@pytest.mark.parametrize("tail_offset, holds", [(1, True), (-1, True), (2, False), (-4, False)])
def test_a_tail_read_off_by_two_or_more_says_the_correction_does_not_hold(tail_offset, holds):
    opinion = offset_opinion.from_meta(META, (0, 100), SyncReading(tail_offset, 0.2))
    assert opinion.holds is holds
    assert ("does not hold" in opinion.lines()[0]) is not holds


def test_syncnet_v2_is_judged_against_what_the_check_leaves():
    """The check measured +4 and applied nothing (media.av_offset=0): +4 is left in aud.wav,
    and an independent network reading +4 on the tail agrees."""
    meta = {"av_offset": {"setting": "0", "applied": 0, "measured": 4, "confidence": 5.0}}
    agree = offset_opinion.from_meta(meta, (0, 100), SyncReading(0, 0.3), SyncReading(4, 6.1))
    assert agree.left == 4 and agree.v2_agrees is True
    assert agree.lines()[1] == ("syncnet_v2 on the held-out tail: +4 (confidence 6.10), agrees "
                                "with the check")
    differ = offset_opinion.from_meta(meta, (0, 100), SyncReading(0, 0.3), SyncReading(0, 6.1))
    assert differ.v2_agrees is False and "the check leaves +4" in differ.lines()[1]


def test_a_tail_under_the_checks_least_stretch_is_shown_but_not_judged():
    """A 1.2 s tail read +11 by a 10-step SyncNet: shown, neither "holds" nor "does not"."""
    opinion = offset_opinion.from_meta(META, (70, 100), SyncReading(11, 0.05),
                                       SyncReading(9, 1.0), min_frames=200)
    assert opinion.short and opinion.holds is None and opinion.v2_agrees is None
    assert "too short to judge" in opinion.lines()[0] and "hold" not in opinion.lines()[0]
    assert "too short to judge" in opinion.lines()[1]
    long = offset_opinion.from_meta(META, (0, 200), SyncReading(11, 0.05), min_frames=200)
    assert not long.short and long.holds is False


def test_a_dataset_without_the_check_record_or_tail_still_reads():
    opinion = offset_opinion.from_meta({}, (10, 10), None)
    assert opinion.holds is None and opinion.measured is None
    assert "not measured" in opinion.lines()[0] and "no held-out tail" in opinion.lines()[0]
    json.dumps(opinion.to_dict(), allow_nan=False)


# ------------------------------------------------------------- a trained tiny person

SHIFT = 5  # frames the sound is moved later after training


@pytest.fixture(scope="module")
def person(tmp_path_factory):
    """A 24 s demo person whose last 35 % (8.4 s, over check.sync_min_s) is held out, SyncNet
    trained 100 steps (~1 min)."""
    from synctalk_lib import demo

    root = tmp_path_factory.mktemp("opinion")
    demo.make_demo(root / "dataset", "talker", seconds=24, lead_silence=1.5)
    cfg = get_config("tiny", {"train.heldout_fraction": 0.35})
    preprocess.preprocess("talker", root=root / "dataset", cfg=cfg, progress=False)
    result = train.train_person("talker", cfg, dataset_root=root / "dataset",
                                checkpoints_root=root / "checkpoints", steps=2,
                                syncnet_steps=100, progress=False)
    return root, cfg, result


@pytest.mark.slow
def test_training_reports_the_check_beside_syncnet_on_the_tail(person):
    root, _, result = person
    opinion = result.audio_offset
    assert opinion is not None and opinion.syncnet is not None
    ds = load_dataset("talker", root / "dataset")
    assert opinion.tail == (round(0.65 * ds.n_frames), ds.n_frames) and not opinion.short
    assert opinion.measured == ds.meta["av_offset"]["measured"]
    assert opinion.holds, str(opinion)  # trained and read on the same corrected sound
    assert opinion.syncnet_v2 is None and "syncnet_v2: not available" in str(opinion)


@pytest.mark.slow
def test_a_sound_shifted_after_training_shows_the_disagreement(person, tmp_path):
    """Preprocessing again with the sound 5 frames later (media.av_offset=-5) after SyncNet
    was trained: its reading of the tail moves by 5, and `evaluate` says the correction does
    not hold, beside the check's own record of what it applied."""
    root, cfg, result = person
    shifted_cfg = cfg.override({"media.av_offset": str(-SHIFT)})
    ds = preprocess.preprocess("talker", root=root / "dataset", cfg=shifted_cfg,
                               progress=False)
    try:
        assert ds.meta["av_offset"]["applied"] == -SHIFT
        before = result.audio_offset.syncnet.offset
        expert = syncnet.load_syncnet(result.syncnet_path)
        read = offset_opinion.read_tail(ds, expert, cfg)
        assert abs(read.syncnet.offset - before - SHIFT) <= 1, str(read)
        assert read.holds is False and "does not hold" in str(read)
        assert "-5 applied" in str(read)
        run = person_eval.evaluate_person(
            "talker", dataset_root=root / "dataset", checkpoints_root=root / "checkpoints",
            output_root=tmp_path, side_by_side=False, progress=False)
        report = json.loads(run.report_path.read_text())
        assert report["audio_offset"]["holds"] is False, report["audio_offset"]
        assert report["audio_offset"]["applied"] == -SHIFT
        assert abs(report["audio_offset"]["syncnet"]["offset"] - before - SHIFT) <= 1
        table = person_eval.format_table([run])
        assert "audio offset: recording check" in table and "does not hold" in table
    finally:  # the dataset as trained, for any later test of this module
        preprocess.preprocess("talker", root=root / "dataset", cfg=cfg, progress=False)
