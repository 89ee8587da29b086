"""The voice report: mouth motion measured from landmarks on rendered output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synctalk_lib import dataset, infer, landmarks, voices


@pytest.fixture(scope="module")
def person(trained_person):
    ds = dataset.load_dataset(trained_person.name, trained_person.dataset_root)
    return trained_person, ds


def test_real_clip_scores_ratio_one_and_in_sync(person):
    _, ds = person
    ref = voices.reference_of(ds)
    opening = landmarks.mouth_opening(ds.points(), ds.scheme)
    score = voices.measure(opening, ds.wav(), ref, ds.config, name="real")
    assert score.ratio_real == pytest.approx(1.0)
    assert abs(score.lag) <= 1 and score.envelope_r > 0.5  # the demo talks with its audio
    assert score.pause_frames > 0 and score.pause_opening < ref.closed + 0.5 * ref.spread


def test_a_still_video_scores_no_spread(person):
    _, ds = person
    ref = voices.reference_of(ds)
    index = int(np.argmin(landmarks.mouth_opening(ds.points(), ds.scheme)))
    still = next(iter(ds.frames().iter_frames(start=index, count=1)))
    score = voices.measure_frames([still] * 100, ds.wav()[: 4 * 16000], ref, ds.config)
    assert score.ratio_real < 0.05
    assert score.frames == 100


def test_voice_report_renders_each_voice_and_writes_json(person, tmp_path):
    trained, ds = person
    avatar = infer.Avatar.load(trained.name, dataset_root=trained.dataset_root,
                               checkpoints_root=trained.checkpoints_root, backend="torch")
    listed = voices.default_voices(ds, shared=None, seconds=2.0)
    assert [v.name for v in listed] == ["own held-out", "espeak low", "espeak mid",
                                        "espeak high"]
    assert listed[0].own and all(len(v.wav) == 32_000 for v in listed[1:])
    # the demo's held-out tail is its trailing silence: its own speech comes from earlier
    own = voices.Voice("own speech", np.asarray(ds.wav()[16_000:64_000]), own=True)
    report = voices.voice_report(avatar, [own, listed[-1]], output_root=tmp_path,
                                 progress=False)
    rows = {v["name"]: v for v in report["voices"]}
    assert rows["own speech"]["ratio_own"] == pytest.approx(1.0)
    assert rows["espeak high"]["frames"] == 50
    saved = json.loads((tmp_path / trained.name / "eval" / "voices.json").read_text())
    assert saved["audio_mode"] == "ave" and len(saved["voices"]) == 2
    assert (tmp_path / trained.name / "eval" / "voices.png").is_file()
    assert "espeak high" in voices.format_table(report)
