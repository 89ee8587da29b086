"""Evaluation: sync offsets recovered on the demo, metrics at their limits, syncnet_v2, reports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synctalk_lib import crop, demo, evaluate, landmarks, media, preprocess, syncnet, syncnet_v2
from synctalk_lib.config import get_config

CFG = get_config("tiny")
HOP = CFG.media.sample_rate // CFG.media.fps  # audio samples per video frame


def shift_audio(wav: np.ndarray, k: int) -> np.ndarray:
    """Delay the audio by k frames (k < 0: advance), keeping its length."""
    pad = np.zeros(abs(k) * HOP, np.float32)
    if k > 0:
        return np.concatenate([pad, wav[: len(wav) - len(pad)]])
    if k < 0:
        return np.concatenate([wav[len(pad):], pad])
    return wav


# ----------------------------------------------------------- a real-looking talking clip


@pytest.fixture(scope="module")
def talking(tmp_path_factory):
    """A 24 s demo, preprocessed, with a tiny SyncNet trained on it (~40 s in all)."""
    root = tmp_path_factory.mktemp("eval")
    demo.make_demo(root, seconds=24, seed=0, lead_silence=1.5)
    ds = preprocess.preprocess("demo", root=root, cfg=CFG, progress=False)
    result = syncnet.train_syncnet(ds, CFG, root / "ckpt", steps=100, progress=False)
    real = evaluate.dataset_clip(ds, name="real", progress=False)
    return ds, result.model, real


@pytest.fixture(scope="module")
def redetected(talking):
    """The same video decoded and tracked from scratch, as any clip would be."""
    ds, _, real = talking
    return evaluate.make_clip(ds.frames(), real.audio, cfg=CFG, name="redetected",
                              progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("k", [0, 3, -3, 5, -5])
def test_offset_of_shifted_audio_is_recovered(talking, redetected, k):
    _, net, _ = talking
    score = evaluate.own_sync(net, redetected.patches(), shift_audio(redetected.audio, k), CFG)
    assert abs(score.offset - k) <= 1, (k, score.offset, score.distances)
    assert score.confidence > 0.05
    assert score.distance == pytest.approx(float(np.nanmin(score.distances)))


@pytest.mark.slow
def test_sync_score_takes_plain_frames_and_audio(talking):
    ds, net, real = talking
    frames = np.stack(list(ds.frames().iter_frames(count=250)))
    wav = shift_audio(real.audio[: 250 * HOP], 4)
    score = evaluate.sync_score(net, frames, wav, cfg=CFG, progress=False)
    assert abs(score.offset - 4) <= 1
    with_boxes = evaluate.sync_score(net, list(frames), wav, boxes=ds.boxes()[:250], cfg=CFG)
    assert abs(with_boxes.offset - 4) <= 1


@pytest.mark.slow
def test_offset_curve_follows_a_shift_that_starts_mid_clip(talking):
    _, net, real = talking
    half = real.n_frames // 2
    wav = real.audio.copy()
    wav[half * HOP:] = shift_audio(real.audio[half * HOP:], 5)
    score = evaluate.own_sync(net, real.patches(), wav, CFG, window_s=4.0)
    curve = score.curve
    sure = curve.confidences > 0.25 * score.confidence
    early = sure & (curve.times < half / 25 - 2.5)
    late = sure & (curve.times > half / 25 + 2.5)
    assert early.sum() >= 3 and late.sum() >= 3, curve
    assert np.median(np.abs(curve.offsets[early])) <= 1
    assert np.median(np.abs(curve.offsets[late] - 5)) <= 1
    assert score.frame_confidence.shape == (real.n_frames,)


def test_clip_offset_equals_syncnet_sync_offset():
    rng = np.random.default_rng(0)
    face, aud = rng.random((60, 8), np.float32), rng.random((63, 8), np.float32)
    ours = evaluate.score_embeddings(face, aud, network="own", fps=25, n_window_frames=5,
                                     n_frames=64, max_shift=6)
    ref = syncnet.sync_offset(face, aud, max_shift=6)
    assert ours.offset == ref.offset
    np.testing.assert_allclose(ours.distances, ref.distances, rtol=1e-6)
    assert ours.confidence == pytest.approx(ref.confidence, rel=1e-5)


def test_zero_padded_distances_are_syncnet_pythons_calc_pdist():
    rng = np.random.default_rng(1)
    face, aud = rng.normal(size=(20, 16)), rng.normal(size=(20, 16))
    vshift = 4
    ours = evaluate.shift_distances(face, aud, vshift, zero_pad=True)  # (9, 20)
    f, a = torch.from_numpy(face), torch.from_numpy(aud)
    padded = F.pad(a, (0, 0, vshift, vshift))
    ref = torch.stack([F.pairwise_distance(f[[i]].repeat(2 * vshift + 1, 1),
                                           padded[i: i + 2 * vshift + 1])
                       for i in range(len(f))], 1)  # calc_pdist, stacked as (shift, frame)
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5)


# ------------------------------------------------------------------- image and landmarks


@pytest.mark.slow
def test_crops_with_the_dataset_boxes_are_the_cached_crops(talking):
    ds, _, real = talking
    clip = evaluate.make_clip(ds.frames().iter_frames(count=40), real.audio[: 40 * HOP],
                              boxes=ds.boxes()[:40], track=real.track.slice(0, 40), cfg=CFG)
    np.testing.assert_array_equal(clip.crops, real.crops[:40])


@pytest.mark.slow
def test_identical_clips_score_perfectly(talking):
    _, _, real = talking
    part = real.slice(150, 250)
    mask = crop.paste_mask(CFG.crop)
    scores = evaluate.evaluate_clip(part, real=part, paste_mask=mask, progress=False)
    s = scores.summary()
    assert s["psnr"] == evaluate.PSNR_CAP_DB and s["ssim"] == pytest.approx(1.0)
    assert s["lmd"] == 0.0 and s["opening_r"] == pytest.approx(1.0) and s["seam"] == 0.0


@pytest.mark.slow
def test_mismatched_clips_score_clearly_worse(talking):
    _, _, real = talking
    part, other = real.slice(150, 250), real.slice(160, 260, name="shifted")
    scores = evaluate.evaluate_clip(other, real=part, paste_mask=crop.paste_mask(CFG.crop),
                                    progress=False)
    s = scores.summary()
    assert s["psnr"] < 40 and s["ssim"] < 0.99
    assert s["lmd"] > 0.002 and s["opening_r"] < 0.6 and s["seam"] > 0.2


@pytest.mark.slow
def test_landmark_opening_follows_the_demo_ground_truth(talking, redetected):
    ds, _, real = talking
    truth = np.load(ds.paths.folder / "mouth_open.npy")
    for clip in (real, redetected):
        corr = evaluate.ground_truth_correlation(clip.opening(), truth)
        assert corr.r > 0.9 and corr.best_lag == 0, corr
    longer = np.concatenate([truth, np.zeros(7, np.float32)])
    corr = evaluate.ground_truth_correlation(real.opening(), longer)
    assert corr.n == real.n_frames and corr.lengths == (len(longer), real.n_frames)


@pytest.mark.slow
def test_redetected_landmarks_match_the_cached_ones(talking, redetected):
    _, _, real = talking
    lmd = evaluate.landmark_distance(real.lips(), redetected.lips())
    assert lmd.mean() < 0.003  # same frames, re-tracked: well under 1 % of the crop
    np.testing.assert_array_equal(evaluate.landmark_distance(real.lips(), real.lips()), 0)


def test_lip_points_are_both_contours_of_both_lips():
    for scheme, n in ((landmarks.MEDIAPIPE, 40), (landmarks.FAN68, 20)):
        assert len(set(scheme.lips)) == len(scheme.lips) == n
        corners = {scheme.lip_top, scheme.lip_bottom, scheme.mouth_left, scheme.mouth_right}
        assert corners <= set(scheme.lips)
    points = np.zeros((2, 68, 2), np.float32)
    assert evaluate.lip_points(points, landmarks.FAN68).shape == (2, 20, 2)
    with pytest.raises(ValueError, match="no lip points"):
        evaluate.lip_points(points, dataclasses.replace(landmarks.FAN68, lips=()))


def test_correlate_series_finds_a_lag_and_cuts_to_the_shorter():
    rng = np.random.default_rng(0)
    a = np.convolve(rng.normal(size=300), np.ones(5) / 5, mode="same")
    late = np.concatenate([np.zeros(3), a])[:290]  # b runs 3 frames late, 10 frames shorter
    corr = evaluate.correlate_series(a, late, max_lag=6)
    assert corr.best_lag == 3 and corr.best_r == pytest.approx(1.0) and corr.r < 0.9
    assert corr.n == 290 and corr.lengths == (300, 290)
    assert np.isnan(evaluate.correlate_series(np.ones(20), a[:20]).r)  # no motion: undefined


def test_silence_motion_counts_only_silent_frames():
    n = 40
    wav = np.zeros(n * HOP, np.float32)
    t = np.arange(20 * HOP) / 16000
    wav[20 * HOP:] = 0.3 * np.sin(2 * np.pi * 220 * t)  # speech in the second half
    silent = evaluate.silent_frames(wav, n, CFG, margin=2)
    assert silent[:18].all() and not silent[18:].any()
    rng = np.random.default_rng(0)
    patches = np.repeat(rng.integers(0, 255, (1, 32, 32, 3), np.uint8), n, axis=0)
    patches[20:] = rng.integers(0, 255, (20, 32, 32, 3), np.uint8)  # moves while speaking
    opening = np.r_[np.full(20, 0.02), rng.uniform(0, 0.1, 20)]
    still = evaluate.silence_motion(patches, opening, silent, (0, 0, 32, 32))
    assert still.frames == 18 and still.pixel_change == 0 and still.opening_change == 0
    patches[5] = 0  # one frame moves in silence
    moved = evaluate.silence_motion(patches, opening, silent, (0, 0, 32, 32))
    assert moved.pixel_change > 1


def test_jitter_is_zero_for_smooth_motion_and_large_for_trembling():
    t = np.arange(20, dtype=np.float32)
    smooth = np.stack([np.stack([0.3 + 0.001 * t, 0.6 + 0.002 * t], -1)] * 4, axis=1)
    assert evaluate.mouth_jitter(smooth).max() == pytest.approx(0, abs=1e-6)
    trembling = smooth.copy()
    trembling[::2] += 0.01
    assert evaluate.mouth_jitter(trembling).mean() > 0.01


def test_seam_is_zero_for_an_unmodified_frame_and_shows_a_colour_step(astronaut):
    ccfg = CFG.crop
    mask = crop.paste_mask(ccfg)
    box = np.array([150.0, 180.0, 370.0, 400.0])
    assert evaluate.seam_difference(astronaut, box, mask, reference=astronaut) == 0.0
    flat = np.full_like(astronaut, 120)
    assert evaluate.seam_difference(flat, box, mask) == 0.0
    patch = crop.crop_face(astronaut, box, ccfg.size).astype(np.int16)
    patch[..., 0] += 30  # a generated patch whose red is off by 30 levels
    pasted = crop.paste_back(astronaut, np.clip(patch, 0, 255).astype(np.uint8), box, mask)
    step = evaluate.seam_difference(pasted, box, mask, reference=astronaut)
    assert 8 < step < 12  # 30 levels in one of three channels
    hard = crop.paste_mask(ccfg, feather=0.0)
    same = crop.paste_back(astronaut, crop.crop_face(astronaut, box, ccfg.size), box, hard)
    assert evaluate.seam_difference(same, box, hard, reference=astronaut) < 1.0


# --------------------------------------------------------------------------- syncnet_v2

# SyncNetModel.S of joonson/syncnet_python: weight shapes of its conv and linear layers
V2_WEIGHTS = {
    "netcnnaud.0.weight": (64, 1, 3, 3), "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.8.weight": (384, 192, 3, 3), "netcnnaud.11.weight": (256, 384, 3, 3),
    "netcnnaud.14.weight": (256, 256, 3, 3), "netcnnaud.18.weight": (512, 256, 5, 4),
    "netfcaud.0.weight": (512, 512), "netfcaud.3.weight": (1024, 512),
    "netfclip.0.weight": (512, 512), "netfclip.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7), "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.8.weight": (256, 256, 1, 3, 3), "netcnnlip.11.weight": (256, 256, 1, 3, 3),
    "netcnnlip.14.weight": (256, 256, 1, 3, 3), "netcnnlip.18.weight": (512, 256, 1, 6, 6),
}
V2_PARAMS = 13_631_616


def _random_v2() -> evaluate.SyncNetV2:
    torch.manual_seed(0)
    net = evaluate.SyncNetV2()
    with torch.no_grad():  # BatchNorm statistics must travel with the weights
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_syncnet_v2_has_the_reference_layout():
    net = evaluate.SyncNetV2().eval()
    state = net.state_dict()
    for key, shape in V2_WEIGHTS.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(p.numel() for p in net.parameters()) == V2_PARAMS
    with torch.no_grad():
        assert net.forward_aud(torch.randn(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.rand(1, 3, 5, 224, 224) * 255).shape == (1, 1024)


@pytest.mark.parametrize("prefix", ["", "__S__."])
def test_load_syncnet_v2_round_trips_a_reference_file(tmp_path, prefix):
    src = _random_v2()
    # files from 2017-era PyTorch have no BatchNorm num_batches_tracked entries
    state = {prefix + k: v for k, v in src.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "syncnet_v2.model")
    net = evaluate.load_syncnet_v2(tmp_path / "syncnet_v2.model", device="cpu")
    assert not net.training
    mfcc = torch.randn(3, 1, 13, 20)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_aud(mfcc), src.forward_aud(mfcc))


def test_load_syncnet_v2_explains_missing_and_wrong_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("SYNCNET_V2", raising=False)
    with pytest.raises(evaluate.SyncNetV2WeightsError, match="never downloads"):
        evaluate.load_syncnet_v2()
    with pytest.raises(evaluate.SyncNetV2WeightsError, match="syncnet_python"):
        evaluate.load_syncnet_v2(tmp_path / "nowhere.model")
    torch.save(syncnet.AudioEncoder((8, 16, 32, 64)).state_dict(), tmp_path / "other.model")
    with pytest.raises(evaluate.SyncNetV2WeightsError, match="missing"):
        evaluate.load_syncnet_v2(tmp_path / "other.model")
    (tmp_path / "junk.model").write_bytes(b"not torch")
    with pytest.raises(evaluate.SyncNetV2WeightsError, match="cannot read"):
        evaluate.load_syncnet_v2(tmp_path / "junk.model")


def test_mfcc_equals_python_speech_features():
    """Values printed by python_speech_features 0.6 `mfcc(int16 samples, 16000)` on this tone."""
    t = np.arange(8000) / 16000
    x = 0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.1 * np.sin(2 * np.pi * 1500 * t) * (
        t > 0.2)
    golden = {
        0: [18.11952, 24.49278, 16.48662, 11.50445, 6.17714, -0.21846, -5.77551, -11.65141,
            -15.99451, -19.33987, -20.35508, -20.10931, -18.20125],
        20: [20.1456, 20.90985, -17.13068, 2.94265, 14.94452, -5.69163, -57.36756, -51.95987,
             -4.40302, 22.39888, 0.59118, -10.1901, 11.61658],
        48: [20.35112, 11.28043, -20.04327, -22.09615, -8.8465, -17.52875, -31.41918, -7.23153,
             39.04413, 42.68834, -0.41162, -29.37571, -14.92245],
    }
    coeffs = syncnet_v2.mfcc(x.astype(np.float32))
    assert coeffs.shape == (13, 49)  # 1 + ceil((8000 - 400) / 160) frames
    for frame, values in golden.items():
        np.testing.assert_allclose(coeffs[:, frame], values, atol=2e-5)


def test_syncnet_v2_scores_a_short_clip_with_random_weights(astronaut):
    net = _random_v2()
    points = np.array([[[180.0, 150.0], [340.0, 330.0]]] * 12, np.float32)
    boxes = syncnet_v2.crop_boxes(points)
    crops = np.stack([syncnet_v2.face_crop(astronaut, b) for b in boxes])
    assert crops.shape == (12, 224, 224, 3) and crops.dtype == np.uint8
    wav = np.random.default_rng(0).normal(0, 0.1, 12 * HOP).astype(np.float32)
    score = evaluate.syncnet_v2_sync(net, crops, wav, max_shift=3, batch=4, progress=False)
    assert score.network == "syncnet_v2" and score.distances.shape == (7,)
    assert -3 <= score.offset <= 3 and score.frame_confidence.shape == (12,)
    assert score.distance == pytest.approx(float(score.distances.min()))
    frames = np.repeat(astronaut[None], 12, axis=0)
    same = evaluate.syncnet_v2_score(net, frames, wav, points=points, max_shift=3,
                                     progress=False)
    np.testing.assert_allclose(same.distances, score.distances, rtol=1e-5)


def test_face_crop_is_grey_outside_the_frame(astronaut):
    corner = syncnet_v2.face_crop(astronaut, np.array([5.0, 5.0, 60.0]))
    assert (corner[:10, :10] == syncnet_v2.V2_PAD_VALUE).all()


# -------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_errors_that_say_what_to_do(talking):
    _, net, real = talking
    with pytest.raises(ValueError, match="empty"):
        evaluate.check_audio(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="mono"):
        evaluate.check_audio(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="32768"):
        evaluate.check_audio(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="uint8 RGB"):
        evaluate.make_clip(np.zeros((3, 32, 32, 3), np.float32), np.zeros(HOP, np.float32),
                           track=real.track.slice(0, 3), cfg=CFG)
    with pytest.raises(ValueError, match="boxes"):
        evaluate.make_clip(np.zeros((3, 64, 64, 3), np.uint8), np.zeros(HOP, np.float32),
                           boxes=real.boxes[:2], track=real.track.slice(0, 3), cfg=CFG)
    with pytest.raises(ValueError, match="matching lengths"):
        evaluate.make_clip(np.zeros((2, 64, 64, 3), np.uint8), np.zeros(HOP, np.float32),
                           track=real.track.slice(0, 3), cfg=CFG)
    with pytest.raises(ValueError, match="longer clip"):
        evaluate.own_sync(net, real.patches()[:3], real.audio[: 3 * HOP], CFG)
    with pytest.raises(ValueError, match="same boxes"):
        evaluate.lower_face_psnr(real.patches(64)[:4], real.patches(32)[:4])
    with pytest.raises(ValueError, match="face_crops=True"):
        evaluate.evaluate_clip(real.slice(0, 20), net_v2=evaluate.SyncNetV2())


# ---------------------------------------------------------------------- reports, figures


def _report(name: str, offset: int, conf: float, dist: float, v2: bool = False) -> dict:
    summary = {"sync_offset": offset, "sync_confidence": conf, "sync_distance": dist}
    if v2:
        summary.update({"v2_offset": offset, "lse_c": conf * 10, "lse_d": dist * 10})
    return {"checkpoint": name, "clips": {"generated": {"summary": summary}}}


def test_choose_best_checkpoint_prefers_sync_then_confidence():
    reports = [_report("a", 0, 0.20, 0.5), _report("b", 4, 0.40, 0.4),
               _report("c", -1, 0.25, 0.5), _report("d", 1, 0.25, 0.45)]
    best = evaluate.choose_best_checkpoint(reports)
    assert best.checkpoint == "d" and best.network == "own" and "3 of 4" in best.reason
    off = evaluate.choose_best_checkpoint([_report("x", 6, 0.1, 0.5), _report("y", -7, 0.3, 0.5)])
    assert off.checkpoint == "y" and "no checkpoint is in sync" in off.reason
    v2 = evaluate.choose_best_checkpoint([_report("p", 0, 0.2, 0.5, True),
                                          _report("q", 0, 0.3, 0.5, True)])
    assert v2.network == "syncnet_v2" and v2.checkpoint == "q"
    with pytest.raises(ValueError, match="at least one"):
        evaluate.choose_best_checkpoint([])
    with pytest.raises(ValueError, match="no clip"):
        evaluate.choose_best_checkpoint(reports, clip="real")


@pytest.mark.slow
def test_a_blurred_or_still_mouth_scores_far_below_the_real_one(talking):
    """Whole lower-face PSNR / SSIM barely see a smudged mouth; the mouth metrics must."""
    import cv2

    _, _, real = talking
    part = real.slice(150, 300)
    blurred = dataclasses.replace(part, name="blurred", crops=np.stack(
        [cv2.GaussianBlur(c, (0, 0), 3) for c in part.crops]))
    s = evaluate.evaluate_clip(blurred, real=part, progress=False).summary()
    assert s["sharpness_ratio"] < 0.5 and s["mouth_psnr"] < s["psnr"]
    assert s["spread_ratio"] > 0.5  # blurred, but its landmarks still move
    itself = evaluate.evaluate_clip(part, real=part, progress=False).summary()
    assert itself["sharpness_ratio"] == pytest.approx(1.0)
    assert itself["spread_ratio"] == pytest.approx(1.0) and itself["mouth_psnr"] == 100
    frozen = part.slice(0, part.n_frames, name="still")
    frozen.track = dataclasses.replace(part.track, points=np.repeat(
        part.track.points[:1], part.n_frames, axis=0))
    frozen.crops = np.repeat(part.crops[:1], part.n_frames, axis=0)
    still = evaluate.evaluate_clip(frozen, real=part, progress=False).summary()
    assert still["spread_ratio"] < 0.05


def test_a_blurred_or_still_mouth_never_wins_the_checkpoint_choice():
    def report(name, conf, sharp, spread):
        r = _report(name, 0, conf, 0.5)
        r["clips"]["generated"]["summary"].update(sharpness_ratio=sharp, spread_ratio=spread)
        return r

    # the person's SyncNet rated the blurred, closed mouth highest (as it did on real footage)
    reports = [report("blurred", 0.40, 0.1, 0.3), report("still", 0.35, 0.8, 0.05),
               report("sharp", 0.20, 0.7, 0.8), report("sharper", 0.18, 0.75, 0.85)]
    best = evaluate.choose_best_checkpoint(reports)
    assert best.checkpoint == "sharp" and "2 set aside" in best.reason
    assert evaluate.mouth_score({"sharpness_ratio": 1.4, "spread_ratio": 0.5}) == 0.5


@pytest.mark.slow
def test_report_round_trips_through_json(talking, tmp_path):
    _, net, real = talking
    part = real.slice(100, 200)
    scores = [evaluate.evaluate_clip(part, net=net, progress=False),
              evaluate.evaluate_clip(part.slice(0, 100, name="generated"), real=part, net=net,
                                     paste_mask=crop.paste_mask(CFG.crop), progress=False)]
    report = evaluate.make_report(scores, "demo", checkpoint="generator_best.pt")
    path = evaluate.write_report(report, "demo", root=tmp_path)
    assert path == tmp_path / "demo" / "eval" / "report.json"
    assert not list(path.parent.glob(".*"))  # no temporary file left behind
    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    loaded = json.loads(path.read_text(), parse_constant=no_constants)
    generated = loaded["clips"]["generated"]
    assert generated["summary"]["psnr"] == evaluate.PSNR_CAP_DB
    assert len(generated["sync"]["frame_confidence"]) == 100
    assert loaded["clips"]["real"]["summary"]["sync_offset"] == scores[0].sync.offset
    best = evaluate.choose_best_checkpoint([loaded])
    assert best.checkpoint == "generator_best.pt"

    figs = [evaluate.plot_offset_curve({s.name: s.sync for s in scores}),
            evaluate.plot_sync_over_time({s.name: s.sync for s in scores}),
            evaluate.plot_mouth_opening({s.name: s.opening for s in scores},
                                        silent=scores[0].silent, truth=scores[0].opening),
            evaluate.plot_metric_table([loaded, loaded])]
    for fig in figs:
        fig.savefig(tmp_path / "fig.png")
    labels, columns, values = evaluate.metric_table([loaded])
    assert labels == ["generator_best.pt"] and "psnr" in columns and "lse_c" not in columns
    assert values[0][columns.index("psnr")] == evaluate.PSNR_CAP_DB


def test_side_by_side_video_holds_both_clips_and_the_audio(tmp_path):
    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (10, 64, 48, 3), np.uint8)
    right = rng.integers(0, 255, (12, 32, 32, 3), np.uint8)  # other size and length
    wav = np.zeros(12 * HOP, np.float32)
    path = evaluate.write_side_by_side(tmp_path / "sbs.mp4", left, right, wav, preset="ultrafast")
    info = media.probe(path)
    assert info.has_audio and (info.width, info.height) == (48 + 64, 64)
    assert info.n_frames_at(25) == 10
