"""Inference: streaming features, templates, backends, rendering and its failure modes."""

from __future__ import annotations

import itertools
import warnings

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import load_avatar

from synctalk_lib import audio, backends, crop, infer, landmarks, media, templates, unet
from synctalk_lib.checkpoint import CheckpointError
from synctalk_lib.config import get_config

# ------------------------------------------------------------------------- audio stream


@pytest.mark.parametrize("n", [100, 800, 16_123, 48_037])
def test_mel_stream_equals_whole_signal(n):
    cfg = get_config("tiny").audio
    rng = np.random.default_rng(n)
    wav = (rng.standard_normal(n) * 0.1).astype(np.float32)
    stream = audio.MelStream(cfg)
    parts, i = [], 0
    while i < n:
        k = int(rng.integers(1, 3000))
        parts.append(stream.push(wav[i:i + k]))
        i += k
    parts.append(stream.finish())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa: n_fft larger than a very short signal
        whole = audio.melspectrogram(wav, cfg)
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def test_silence_needs_min_length():
    cfg = get_config("tiny").override({"infer.min_silence_s": 0.2})  # 5 frames
    hop = 640
    loud = (np.sin(np.arange(hop * 10) * 0.3) * 0.3).astype(np.float32)
    quiet_short = np.zeros(hop * 3, np.float32)
    quiet_long = np.zeros(hop * 8, np.float32)
    wav = np.concatenate([loud, quiet_short, loud, quiet_long, loud])
    fs = infer.FeatureStream(lambda w: np.zeros((len(w), 512), np.float32), cfg)
    for i in range(0, len(wav), 777):
        fs.push(wav[i:i + 777])
    fs.finish()
    silent = np.array(fs.silent)
    assert len(silent) == audio.n_video_frames(len(wav), cfg.media)
    assert not silent[10:13].any()  # 3 quiet frames: a short pause, still speech
    assert silent[23:31].all() and not silent[:23].any() and not silent[31:].any()



def test_a_short_pause_gets_the_whole_pause_window_away_from_its_edges():
    """A pause shorter than the audio window still gives its frames nothing but the pause
    window (speech rows beside pause rows drew a half-open mouth), except its last
    `pause_lead_frames` and first `pause_trail_frames`, which keep the audio's own rows, as
    speech frames do, so the lips can part before the sound."""
    hop = 640
    loud = (np.sin(np.arange(hop * 20) * 0.3) * 0.3).astype(np.float32)
    wav = np.concatenate([loud, np.zeros(hop * 10, np.float32), loud])
    pause = np.arange(16 * 4, dtype=np.float32).reshape(16, 4) + 100

    def stream(**infer_settings):
        cfg = get_config("tiny").override(  # min_silence_s 0.3: 8 frames
            {f"infer.{k}": v for k, v in infer_settings.items()})
        n = audio.n_video_frames(len(wav), cfg.media)
        feats = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
        fs = infer.FeatureStream(None, cfg, precomputed=feats, silence=pause)
        fs.push(wav)
        fs.finish()
        return fs, feats

    def own(t, feats):  # the audio's own window of frame t, edges repeated
        return feats[np.clip(np.arange(t - 8, t + 8), 0, len(feats) - 1)]

    fs, feats = stream(pause_lead_frames=0, pause_trail_frames=0)
    silent = np.flatnonzero(fs.silent)
    assert silent.tolist() == list(range(20, 30))  # no window of it lies wholly inside it
    for t in range(len(feats)):
        np.testing.assert_array_equal(fs.window(t), pause if t in silent else own(t, feats))
    fs, feats = stream(pause_lead_frames=3, pause_trail_frames=2)
    whole = [t for t in range(len(feats)) if np.array_equal(fs.window(t), pause)]
    assert whole == list(range(22, 27))
    for t in (20, 21, 27, 28, 29):  # the pause's edges: the audio's own window
        np.testing.assert_array_equal(fs.window(t), own(t, feats))
    with pytest.raises(ValueError, match="pause_lead_frames"):
        stream(pause_lead_frames=8)



# ------------------------------------------------------------------------- templates


def test_bouncing_walks_forward_and_back():
    plan = templates.TemplatePlan(4, start=1)
    assert [plan.next() for _ in range(9)] == [1, 2, 3, 2, 1, 0, 1, 2, 3]


def test_loop_back_ends_on_start():
    seq = templates.loop_back_sequence(11, 5, start=2)
    assert len(seq) == 11 and seq[0] == 2 and seq[-1] == 2
    assert np.abs(np.diff(seq)).max() <= 1


def test_core_plan_plays_idle_runs_during_silence():
    plan = templates.TemplatePlan(100, start=0, idle_runs=[(40, 50)])
    speech = [plan.next(False) for _ in range(5)]
    quiet = [plan.next(True) for _ in range(15)]
    after = [plan.next(False) for _ in range(3)]
    assert speech == [0, 1, 2, 3, 4]
    assert all(40 <= q < 50 for q in quiet)
    assert np.abs(np.diff(quiet)).max() == 1  # a real walk through the idle footage
    assert abs(after[0] - quiet[-1]) == 1  # leaving silence continues from there, no cut


def test_template_reader_matches_a_sequential_read(trained_person, tmp_path):
    from synctalk_lib.dataset import load_dataset

    ds = load_dataset(trained_person.name, trained_person.dataset_root)
    reader = templates.TemplateReader(ds.frames(), tmp_path, block=8)
    cached = list(media.read_frames(tmp_path / "templates_g8.mp4"))
    assert len(cached) == ds.n_frames
    for i in [0, 7, 8, 40, 39, 3, ds.n_frames - 1]:
        np.testing.assert_array_equal(reader[i], cached[i])
    original = next(iter(ds.frames().iter_frames(40, 1)))
    assert np.abs(reader[40].astype(int) - original).mean() < 2.0  # CRF 12: near lossless


def test_the_template_cache_bar_follows_the_progress_switch(trained_person, tmp_path,
                                                           monkeypatch, capsys):
    """evaluate_person(progress=False) drew the one-time "template cache" bar all the same."""
    from synctalk_lib.dataset import load_dataset

    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # make test sets it
    ds = load_dataset(trained_person.name, trained_person.dataset_root)
    templates.TemplateReader(ds.frames(), tmp_path / "quiet", block=8, progress=False)
    assert "template cache" not in capsys.readouterr().err
    templates.TemplateReader(ds.frames(), tmp_path / "shown", block=8)
    assert "template cache" in capsys.readouterr().err


# ------------------------------------------------------------------------- backends


def test_onnx_agrees_with_torch(trained_person):
    from synctalk_lib.generators import load_generator, resolve_checkpoint

    path = resolve_checkpoint(trained_person.name, trained_person.checkpoints_root)
    model, cfg = load_generator(path, device="cpu")
    inputs = backends.generator_inputs(cfg)
    rng = np.random.default_rng(0)
    x = rng.random((3, *inputs["x"].shape[1:]), np.float32)
    a = rng.random((3, *inputs["audio"].shape[1:]), np.float32)
    torch_out = backends.make_backend(model, cfg, path, "torch", "cpu")(x, a)
    onnx_out = backends.make_backend(model, cfg, path, "onnx", "cpu")(x, a)
    assert onnx_out.shape == torch_out.shape == (3, 3, cfg.model.image_size,
                                                 cfg.model.image_size)
    assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_backends_render_the_same_frames(trained_person, avatar, speech):
    torch_avatar = load_avatar(trained_person, backend="torch")
    a = list(avatar.frames(speech[:16000]))
    b = list(torch_avatar.frames(speech[:16000]))
    assert len(a) == len(b) == 25
    assert max(np.abs(x.astype(int) - y).max() for x, y in zip(a, b, strict=True)) <= 2


def test_unknown_backend_is_a_clear_error(trained_person):
    with pytest.raises(backends.BackendError, match="unknown backend"):
        load_avatar(trained_person, backend="tensorrt")


# ------------------------------------------------------------------------- rendering


def test_render_length_audio_and_atomic_output(avatar, speech, tmp_path):
    out = tmp_path / "out.mp4"
    result = avatar.render(speech, out, progress=False)
    info = media.probe(out)
    n_expected = audio.n_video_frames(len(speech), avatar.cfg.media)
    assert result.n_frames == n_expected == info.n_frames_at(25)
    assert info.has_audio and info.fps == 25 and info.video_codec == "h264"
    assert abs(info.duration - len(speech) / 16000) <= 1 / 25 + 0.03
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp files left


def test_streaming_equals_offline(avatar, speech):
    offline = list(avatar.frames(speech, block=len(speech)))
    hop = avatar.cfg.media.sample_rate // avatar.cfg.media.fps
    live = avatar.stream(input_level_db=infer.speech_level_db(infer.frame_levels_db(speech, hop)))
    streamed = []
    rng = np.random.default_rng(1)
    i = 0
    while i < len(speech):
        k = int(rng.integers(100, 5000))
        streamed.extend(live.push(speech[i:i + k]))
        i += k
        assert len(streamed) >= audio.n_video_frames(i, avatar.cfg.media) - 25  # latency < 1 s
    streamed.extend(live.finish())
    assert len(streamed) == len(offline)
    for a, b in zip(streamed, offline, strict=True):
        np.testing.assert_array_equal(a, b)


def test_frame_levels_match_the_per_frame_level():
    wav = np.random.default_rng(0).normal(0, 0.1, 1000).astype(np.float32)
    wav[:300] = 0
    levels = infer.frame_levels_db(wav, 640)
    assert levels.shape == (2,)
    np.testing.assert_allclose(levels, [infer.frame_level_db(wav[:640]),
                                        infer.frame_level_db(wav[640:])], atol=1e-9)


def test_pauses_do_not_depend_on_the_audio_level(avatar, speech):
    """The same speech 26 dB quieter has the same pauses; with a fixed threshold (dBFS) much
    of its speech would count as silence."""
    hop = avatar.cfg.media.sample_rate // avatar.cfg.media.fps

    def pauses(wav: np.ndarray, cfg) -> list[bool]:
        level = infer.speech_level_db(infer.frame_levels_db(wav, hop))
        stream = infer.FeatureStream(avatar.encode, cfg,
                                     silence_offset=infer.silence_offset_db(cfg, level))
        stream.push(wav)
        stream.finish()
        return stream.silent

    quiet = speech * np.float32(0.05)
    fixed = avatar.cfg.override({"infer.relative_silence": False})
    loud = pauses(speech, avatar.cfg)
    assert any(loud) and not all(loud)
    assert pauses(quiet, avatar.cfg) == loud
    assert sum(pauses(quiet, fixed)) > sum(loud) + 10
    assert infer.silence_offset_db(avatar.cfg, None) == 0.0
    assert infer.silence_offset_db(avatar.cfg, -75.0) == 0.0  # no speech to measure
    assert infer.silence_offset_db(fixed, -30.0) == 0.0
    assert infer.silence_offset_db(avatar.cfg, -30.0) == pytest.approx(16.0)


def test_paste_back_leaves_no_seam(avatar, speech):
    """Colour step across the border of the pasted region ~ the real frame's own step."""
    live = avatar.stream()
    frames = live.push(speech[:16000 * 2]) + live.finish()
    steps_gen, steps_real = [], []
    for frame, t in zip(frames, live.templates, strict=True):
        mask = avatar.paste_masks[t]
        ring = (mask > 0) & (mask < 0.2)  # just inside the fade's outer edge
        outside = (mask == 0) & _dilate(mask > 0, 6)  # just outside it
        real = avatar.reader[t]
        for img, out in ((frame, steps_gen), (real, steps_real)):
            c = crop.crop_face(img, avatar.boxes[t], avatar.crop_cfg.size).astype(float)
            out.append(np.abs(c[ring].mean(0) - c[outside].mean(0)).mean())
    assert np.mean(steps_gen) < np.mean(steps_real) + 3.0


def test_a_small_model_patch_is_upscaled_sharply(astronaut):
    """The `cpu` generator draws 160 px; brought to the 320-px inner patch it keeps the
    detail that area-averaging to 160 px left (bicubic: 49.0 dB here; bilinear gave 46.2)."""
    cfg = get_config("cpu").override({"infer.colour_match": False})
    box = np.array([180.3, 115.7, 272.1, 207.5])
    c = crop.crop_face(astronaut, box, cfg.crop.size)
    real = crop.inner(c, cfg.crop)
    small = cv2.resize(real, (160, 160), interpolation=cv2.INTER_AREA)
    comp = infer.Compositor(cfg, cfg.crop)
    got = crop.inner(comp.patch_in_crop(c, small, crop.paste_mask(cfg.crop)), cfg.crop)
    psnr = 10 * np.log10(255**2 / np.mean((got.astype(float) - real) ** 2))
    assert psnr > 48.0


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def test_silence_gives_a_still_mouth(avatar, speech):
    """In a pause every frame gets the same audio input, and the generated mouth moves less
    than the real footage underneath it does."""
    pause = np.zeros(16000 * 2, np.float32)
    wav = np.concatenate([speech[:16000], pause, speech[:16000]])
    live = avatar.stream()
    frames = live.push(wav) + live.finish()
    silent = np.array(live.features.silent)
    assert silent[27:73].all()  # the pause (frames 25..74), give or take the speech's own
    inner = np.arange(35, 65)
    assert all(silent[t - 8: t + 8].all() for t in inner)  # same (silence) audio window
    mouth = _mouth_change(avatar, frames, live.templates, inner)
    real = _mouth_change(avatar, [avatar.reader[t] for t in live.templates], live.templates,
                         inner)
    assert mouth <= real + 1.0


def _mouth_change(avatar, frames, tmpl, idx) -> float:
    size = avatar.crop_cfg.size
    x0, y0, x1, y1 = (int(v * size / 64) for v in (20, 36, 44, 56))  # lower middle of the crop
    crops = [crop.crop_face(frames[t], avatar.boxes[tmpl[t]], size)[y0:y1, x0:x1]
             for t in idx]
    return float(np.mean([np.abs(a.astype(int) - b).mean()
                          for a, b in itertools.pairwise(crops)]))


class ClosedMouthOnlyFor:
    """A stand-in generator: it redraws the input's reference exactly when the audio window is
    `window` (16, F), and darkens it the further the audio is from that."""

    def __init__(self, window: np.ndarray, mode: str) -> None:
        window = np.asarray(window, np.float32)[None]
        self.target = unet.audio_window_to_input(torch.from_numpy(window), mode).numpy()

    def __call__(self, x: np.ndarray, audio_in: np.ndarray) -> np.ndarray:
        far = np.abs(audio_in - self.target).reshape(len(x), -1).mean(axis=1)
        return x[:, :3] * (1 - np.minimum(far, 0.9))[:, None, None, None]


def test_pauses_get_the_window_that_redraws_a_closed_mouth(trained_person, speech,
                                                          monkeypatch):
    """Of digital silence's and the real windows of the person's closed-mouth frames, the
    pause window is the one with which the generator reproduces the still reference's mouth,
    and every frame of a pause uses it."""
    avatar = load_avatar(trained_person, backend="onnx")
    closed = infer.closed_mouth_frames(avatar.dataset, avatar.cfg)
    assert len(closed) >= 4
    gaps = landmarks.mouth_opening(avatar.dataset.points()[closed], avatar.dataset.scheme)
    assert np.all(np.diff(gaps) >= 0)  # most closed first
    # the demo's most closed mouths sit in its digitally silent lead and tail, whose features
    # are digital silence's: offer speech frames instead, so the candidates differ
    offered = np.arange(40, 40 + infer.PAUSE_CANDIDATES)
    monkeypatch.setattr(infer, "closed_mouth_frames", lambda ds, cfg: offered)
    windows = avatar.recording_windows(offered)
    mel = np.asarray(avatar.dataset.mel_windows()[offered[3] - 8: offered[3] + 8], np.float32)
    np.testing.assert_allclose(windows[3], avatar.encode(mel[:, None]), atol=1e-5)  # t-8..t+7
    digital = np.tile(infer.digital_silence_feature(avatar.encode, avatar.cfg), (16, 1))
    assert np.abs(windows[3] - digital).mean() > 0.01
    avatar.backend = ClosedMouthOnlyFor(windows[3], avatar.cfg.model.audio_mode)
    np.testing.assert_allclose(avatar.pause_window, windows[3], atol=1e-6)
    errors = avatar.closed_mouth_errors(np.stack([windows[3], digital]))
    assert errors[0] < 1e-3 < errors[1]
    wav = np.concatenate([speech[:8000], np.zeros(16000, np.float32), speech[:8000]])
    with avatar.stream() as live:
        live.push(wav)
        live.finish()
        assert live.features.silent[25]
        np.testing.assert_array_equal(live.features.window(25), avatar.pause_window)
    plain = load_avatar(trained_person, backend="onnx", overrides={"infer.pause_feature": "digital"})
    np.testing.assert_allclose(plain.pause_window, digital, atol=1e-6)
    with pytest.raises(infer.InferError, match="pause_feature"):
        _ = load_avatar(trained_person, overrides={"infer.pause_feature": "loud"}).pause_window


def test_mouth_gain_moves_speech_mouths_and_keeps_the_pause_mouth(trained_person, avatar):
    """`infer.mouth_gain` scales the generator's audio code away from the pause window's:
    the pause window draws the same mouth as without it, speech windows a different one
    (further from the closed mouth), ONNX the same as torch, checkpoints untouched."""
    idx = infer.still_reference_index(avatar.dataset, avatar.cfg)  # its closed mouth
    patch = np.stack([avatar.template_patch(idx)] * 3)
    speech_rows = avatar.recording_windows(np.array([20, 40]))
    windows = np.concatenate([avatar.pause_window[None], speech_rows]).astype(np.float32)
    plain = avatar.generate(patch, windows)
    gained = load_avatar(trained_person, backend="onnx", overrides={"infer.mouth_gain": 2.0})
    torch_gained = load_avatar(trained_person, backend="torch", overrides={"infer.mouth_gain": 2.0})
    np.testing.assert_allclose(gained.pause_window, avatar.pause_window)
    y = gained.generate(patch, windows)
    np.testing.assert_allclose(y[0], plain[0], atol=2e-3)  # the pause: as before
    np.testing.assert_allclose(torch_gained.generate(patch, windows), y, atol=2e-3)
    torch_plain = load_avatar(trained_person, backend="torch")
    p, g = torch_plain.generate(patch, windows), torch_gained.generate(patch, windows)
    # speech mouths further from the pause mouth (the tiny model is near-linear here)
    assert np.abs(g[1:] - g[0]).mean() > 1.5 * np.abs(p[1:] - p[0]).mean() > 0
    assert "gain2-" in gained.backend.path.name and "gain" not in avatar.backend.path.name
    assert not any("pivot" in k for k in torch_gained.backend.model.state_dict())
    with pytest.raises(ValueError, match="mouth_gain"):
        load_avatar(trained_person, backend="torch", overrides={"infer.mouth_gain": 0.0})


def test_core_mode_plays_real_footage_in_pauses(trained_person, speech):
    core = load_avatar(trained_person, backend="onnx", overrides={"infer.mode": "core"})
    assert core.idle_runs, "the demo starts and ends with silence"
    wav = np.concatenate([speech[:16000], np.zeros(16000, np.float32), speech[:8000]])
    live = core.stream()
    frames = live.push(wav) + live.finish()
    silent = np.array(live.features.silent)
    assert silent.sum() >= 15
    for t in np.flatnonzero(silent):
        np.testing.assert_array_equal(frames[t], core.reader[live.templates[t]])
        assert any(a <= live.templates[t] < b for a, b in core.idle_runs)


def test_render_many_from_a_folder(avatar, speech, tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    media.save_wav(folder / "a.wav", speech[:8000], 16000)
    sf.write(folder / "b.flac", np.stack([speech[:12000]] * 2, 1), 44100)  # stereo, other rate
    (folder / "notes.txt").write_text("not audio")
    results = avatar.render_many(folder, tmp_path / "out", progress=False)
    assert [r.path.name for r in results] == ["a.mp4", "b.mp4"]
    assert results[1].n_frames == audio.n_video_frames(12000 * 16000 // 44100, avatar.cfg.media)


# ------------------------------------------------------------------------- bad input


def test_unknown_person_lists_known_ones(trained_person):
    with pytest.raises(infer.InferError, match="known: talker"):
        infer.Avatar.load("nobody", dataset_root=trained_person.dataset_root,
                          checkpoints_root=trained_person.checkpoints_root)


def test_no_checkpoint_says_train_first(trained_person, tmp_path):
    (tmp_path / "talker").mkdir()
    with pytest.raises(infer.InferError, match="train"):
        infer.Avatar.load("talker", dataset_root=trained_person.dataset_root,
                          checkpoints_root=tmp_path)


def test_preset_mismatch_is_a_clear_error(trained_person):
    with pytest.raises(CheckpointError, match="tiny"):
        load_avatar(trained_person, preset="cpu")


@pytest.mark.parametrize("case", ["empty", "short", "silent", "corrupt", "missing", "video"])
def test_bad_audio_leaves_nothing(avatar, tmp_path, case, trained_person):
    out = tmp_path / "out.mp4"
    src = tmp_path / "in.wav"
    if case == "empty":
        src.write_bytes(b"")
    elif case == "short":
        media.save_wav(src, np.full(1000, 0.3, np.float32), 16000)
    elif case == "silent":
        media.save_wav(src, np.zeros(32000, np.float32), 16000)
    elif case == "corrupt":
        src.write_bytes(b"RIFF" + bytes(range(256)) * 20)
    elif case == "video":  # a video without sound
        src = tmp_path / "mute.mp4"
        media.write_video(src, [np.zeros((64, 64, 3), np.uint8)] * 5)
    with pytest.raises(infer.InferError):
        avatar.render(src, out, progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_one_long_push_yields_nearly_everything(avatar, speech):
    wav = np.tile(speech, 3)  # 12 s in one chunk
    live = avatar.stream()
    first = live.push(wav)
    total = audio.n_video_frames(len(wav), avatar.cfg.media)
    assert total - 25 <= len(first) < total
    assert len(first) + len(live.finish()) == total


def test_still_reference_is_a_closed_mouth_training_frame(avatar, trained_person):
    from synctalk_lib import data, landmarks

    ds, cfg = avatar.dataset, avatar.cfg
    index = infer.still_reference_index(ds, cfg)
    split = data.split_frames(ds.n_frames, cfg.train.heldout_fraction, cfg.train.val_fraction)
    assert index in set(split.train.tolist()), "held-out frames are never the reference"
    opening = landmarks.mouth_opening(ds.points()[split.train], ds.scheme)
    assert opening[split.train.tolist().index(index)] <= np.percentile(opening, 10) + 1e-6
    assert avatar.reference_patch.shape == (cfg.model.image_size,) * 2 + (3,)
    template_ref = load_avatar(trained_person, backend="onnx",
                         overrides={"infer.reference": "template"})
    assert template_ref.reference_patch is None


@pytest.mark.parametrize("name", ["folder", "no_suffix"])
def test_bad_output_path_fails_before_rendering(avatar, speech, tmp_path, name):
    """An existing folder used to fail at the final rename, after the whole render."""
    out = tmp_path / name
    if name == "folder":
        out.mkdir()
    rendered = []

    def templates():  # notes every frame the render starts
        for t in itertools.count():
            rendered.append(t)
            yield 0

    with pytest.raises(media.MediaError, match="is a folder" if name == "folder" else "end in"):
        avatar.render(speech, out, template_indices=templates(), progress=False)
    assert rendered == [] and [p.name for p in tmp_path.iterdir()] == (
        ["folder"] if name == "folder" else [])


def test_cli_infer_into_a_folder_is_a_clear_error(trained_person, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "videos"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "synctalk_lib", "infer", "--name", trained_person.name,
         "--root", str(trained_person.dataset_root), "--checkpoints",
         str(trained_person.checkpoints_root), "--audio", str(trained_person.heldout_wav),
         "--out", str(out), "--no-progress"], check=False, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "is a folder" in proc.stderr and not list(out.iterdir())
