"""SyncNet: layouts, pair sampling, learning on a synthetic talker, exact resume."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from synctalk_lib import audio, syncnet
from synctalk_lib.config import SyncNetConfig, get_config
from synctalk_lib.unet import count_parameters

CFG = get_config("tiny")

# SyncTalk_2D's AudioEncoder (utils.py / data_utils/ave/models/audioEnc.py): 13 Conv2d+BN blocks
# (in, out, kernel); the 256-wide stage has one residual block, not Wav2Lip's two.
AVE_BLOCKS = [(1, 32, 3), (32, 32, 3), (32, 32, 3), (32, 64, 3), (64, 64, 3), (64, 64, 3),
              (64, 128, 3), (128, 128, 3), (128, 128, 3), (128, 256, 3), (256, 256, 3),
              (256, 512, 3), (512, 512, 1)]
AVE_PARAMS = 2_812_672  # "2.8 M" (docs/design.md §9); BatchNorm running stats are buffers


def _ave_reference_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of `audio_visual_encoder.pth` (saved without the module prefix)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (cin, cout, k) in enumerate(AVE_BLOCKS):
        shapes[f"{i}.conv_block.0.weight"] = (cout, cin, k, k)
        shapes[f"{i}.conv_block.0.bias"] = (cout,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{i}.conv_block.1.{name}"] = (cout,)
        shapes[f"{i}.conv_block.1.num_batches_tracked"] = ()
    return shapes


# ------------------------------------------------------------------ a synthetic talker


def _envelope(n_mel: int, rng: np.random.Generator) -> np.ndarray:
    """Syllable-like loudness at 80 frames/s: bursts of 0.1-0.35 s, a third of them silent."""
    env = np.zeros(n_mel, np.float32)
    t = 0
    while t < n_mel:
        length = int(rng.integers(8, 28))
        env[t: t + length] = 0.0 if rng.random() < 0.33 else rng.uniform(0.4, 1.0)
        t += length
    return np.convolve(env, np.ones(3) / 3, mode="same").astype(np.float32)


def _talker(n_frames: int, seed: int = 0, size: int = 40):
    """A PreparedDataset stand-in: a mouth that opens with the audio's loudness.

    Crops are `size` px (ring 4), mel windows come from a spectrum whose level follows the
    loudness envelope, and frame i's mouth opening is the envelope over frame i's 40 ms.
    """
    rng = np.random.default_rng(seed)
    cfg = CFG.override({"crop.size": size})
    per_frame = audio.mel_frames_per_video_frame(cfg.audio, cfg.media)  # 3.2
    n_mel = int(np.ceil(n_frames * per_frame)) + cfg.audio.mel_window
    env = _envelope(n_mel, rng)
    shape = np.linspace(1.0, 0.3, 80)[None, :]
    mel = -4.0 + 7.0 * env[:, None] * shape + 0.2 * rng.standard_normal((n_mel, 80))
    windows = audio.frame_mel_windows(mel.astype(np.float32), n_frames, cfg.audio, cfg.media)
    opening = np.array([env[int(i * per_frame): int((i + 1) * per_frame)].mean()
                        for i in range(n_frames)])
    yy, xx = np.mgrid[:size, :size]
    crops = np.empty((n_frames, size, size, 3), np.uint8)
    for i in range(n_frames):
        cx, cy = size / 2 + rng.uniform(-1, 1), 0.62 * size + rng.uniform(-1, 1)
        half_h = 0.6 + 0.16 * size * opening[i]
        inside = ((xx - cx) / (0.22 * size)) ** 2 + ((yy - cy) / half_h) ** 2 <= 1
        img = np.full((size, size, 3), (200, 150, 130), np.float32)
        img[inside] = (70, 20, 30)
        crops[i] = np.clip(img + rng.normal(0, 6, img.shape), 0, 255)
    return types.SimpleNamespace(
        n_frames=n_frames, config=cfg, crops=lambda: crops, mel_windows=lambda: windows,
        paths=types.SimpleNamespace(name="talker"), opening=opening)


@pytest.fixture(scope="module")
def talker():
    return _talker(500)


# ------------------------------------------------------------------------------ networks


def test_encoders_and_syncnet_shapes():
    net = syncnet.SyncNet(CFG.syncnet).eval()
    s, t = CFG.syncnet.image_size, CFG.syncnet.n_frames
    faces, mels = torch.rand(3, 3 * t, s, s), torch.randn(3, 1, 80, 16)
    assert net.face_encoder(faces).shape == (3, 512)
    assert net.audio_encoder(mels).shape == (3, 512)
    face, aud = net(faces, mels)
    assert face.shape == aud.shape == (3, 512)
    np.testing.assert_allclose(face.norm(dim=1).detach(), 1.0, atol=1e-5)
    assert (face >= 0).all() and (aud >= 0).all()
    p = net.sync_probability(faces, mels)
    assert p.shape == (3,) and ((p >= 0) & (p <= 1 + 1e-6)).all()


@pytest.mark.parametrize("preset", ["cpu", "hd328"])
def test_face_encoder_fits_preset_image_size(preset):
    scfg = get_config(preset).syncnet
    enc = syncnet.FaceEncoder(scfg.image_size, scfg.n_frames, scfg.face_channels,
                              scfg.face_res_blocks).eval()
    out = enc(torch.rand(1, 3 * scfg.n_frames, scfg.image_size, scfg.image_size))
    assert out.shape == (1, 512)


def test_audio_encoder_has_synctalk2d_layout():
    enc = syncnet.AudioEncoder()
    assert count_parameters(enc) == AVE_PARAMS
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    expected = {f"audio_encoder.{k}": v for k, v in _ave_reference_shapes().items()}
    assert ours == expected
    assert enc.eval()(torch.randn(2, 1, 80, 16)).shape == (2, 512)


def _save_reference_file(enc, path, prefix=""):
    torch.save({prefix + k.removeprefix("audio_encoder."): v.clone()
                for k, v in enc.state_dict().items()}, path)


@pytest.mark.parametrize("prefix", ["", "audio_encoder.", "module.audio_encoder."])
def test_load_ave_weights_round_trips_reference_layout(tmp_path, prefix):
    torch.manual_seed(1)
    src = syncnet.AudioEncoder()
    with torch.no_grad():  # non-default BatchNorm statistics must travel too
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "audio_visual_encoder.pth"
    _save_reference_file(src, path, prefix)
    dst = syncnet.load_ave_weights(syncnet.AudioEncoder(), path)
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k
    mel = torch.randn(4, 1, 80, 16)
    torch.testing.assert_close(dst(mel), src.eval()(mel))


def test_load_ave_weights_rejects_wrong_files(tmp_path):
    enc = syncnet.AudioEncoder()
    with pytest.raises(syncnet.AveWeightsError, match="no audio encoder weights"):
        syncnet.load_ave_weights(enc, tmp_path / "missing.pth")
    face = syncnet.FaceEncoder(32, 5, (8, 16))
    torch.save(face.state_dict(), tmp_path / "face.pth")
    with pytest.raises(syncnet.AveWeightsError, match="not an audio encoder"):
        syncnet.load_ave_weights(enc, tmp_path / "face.pth")
    narrow = syncnet.AudioEncoder((8, 16, 32, 64))
    _save_reference_file(narrow, tmp_path / "narrow.pth")
    with pytest.raises(syncnet.AveWeightsError, match="other sizes"):
        syncnet.load_ave_weights(enc, tmp_path / "narrow.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(syncnet.AveWeightsError, match="cannot read"):
        syncnet.load_ave_weights(enc, tmp_path / "garbage.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(syncnet.AveWeightsError, match="not a state dict"):
        syncnet.load_ave_weights(enc, tmp_path / "list.pth")


def test_audio_features_is_the_encoder_per_frame():
    torch.manual_seed(0)
    enc = syncnet.AudioEncoder(CFG.syncnet.audio_channels).eval()
    mels = np.random.default_rng(0).uniform(-4, 4, (7, 80, 16)).astype(np.float32)
    feats = syncnet.audio_features(enc, mels, batch=3)
    assert feats.shape == (7, 512) and feats.dtype == np.float32
    with torch.no_grad():
        direct = enc(torch.from_numpy(mels[:, None])).numpy()
    np.testing.assert_allclose(feats, direct, atol=1e-5)


# ---------------------------------------------------------------------------- pair data


def test_sync_pairs_balance_alignment_and_offsets(talker):
    scfg = CFG.syncnet
    pairs = syncnet.SyncPairs(talker, 100, 300, scfg)
    assert len(pairs) == 2 * (200 - scfg.n_frames + 1)
    labels = [pairs[i][2].item() for i in range(60)]
    assert sum(labels) == 30  # every even item in sync, every odd one off
    rng = np.random.default_rng(0)
    mels = talker.mel_windows()
    loud = syncnet.loud_windows(mels, scfg.silence_fraction)
    shifts = []
    for idx in range(len(pairs)):
        face, aud, label = pairs.pair(idx, rng)
        assert 100 <= aud <= 300 - scfg.n_frames
        if label:
            assert aud == face
        else:
            assert abs(aud - face) >= scfg.min_shift
            assert loud[face] or loud[aud]  # never silence against silence
            shifts.append(aud - face)
    shifts = np.array(shifts)
    assert (shifts < 0).any() and (shifts > 0).any()
    near = np.abs(shifts) <= scfg.max_shift
    assert 0.4 < near.mean() < 0.95  # both shifted and far ("elsewhere") negatives

    faces, mel, label = pairs[2 * 10]  # window 10: frames 110..114 and their mel window
    s = scfg.image_size
    assert faces.shape == (3 * scfg.n_frames, s, s) and faces.dtype == torch.float32
    assert mel.shape == (1, 80, 16) and label.item() == 1.0
    np.testing.assert_array_equal(mel[0].numpy(), mels[110])
    expected = syncnet.dataset_faces(talker, scfg, 110, 115)  # (T, S, S, 3)
    np.testing.assert_allclose(faces.numpy(), syncnet.stack_windows(expected, 5)[0], atol=1e-6)
    assert 0.0 <= faces.min() and faces.max() <= 1.0


def test_sync_pairs_refuse_a_too_short_range(talker):
    with pytest.raises(ValueError, match="windows"):
        syncnet.SyncPairs(talker, 0, 8, CFG.syncnet)


def test_split_keeps_validation_before_the_heldout_tail():
    cfg = CFG.override({"syncnet.val_fraction": 0.1})
    split = syncnet.split_frames(1000, cfg)
    heldout = cfg.flat().get("train.heldout_fraction", 0.0)
    end = 1000 - round(heldout * 1000)
    assert split.val == (end - 100, end) and split.train == (0, end - 100)


# ----------------------------------------------------------------------- training


def test_tiny_syncnet_learns_sync_on_a_synthetic_talker(talker, tmp_path):
    torch.set_num_threads(2)
    result = syncnet.train_syncnet(talker, CFG, tmp_path, progress=False)
    history = result.history
    assert result.val_accuracy >= 0.7, history
    first, last = history[0]["train_loss"], np.mean([h["train_loss"] for h in history[-2:]])
    assert last < first - 0.05, history
    assert result.path.is_file() and result.best_step in [h["step"] for h in history]
    model = syncnet.load_syncnet(result.path)
    assert not model.training
    # the trained audio side is the generator's `ave` encoder, loadable on its own
    enc = syncnet.load_ave_weights(syncnet.AudioEncoder(CFG.syncnet.audio_channels), result.path)
    mels = talker.mel_windows()[:6]
    np.testing.assert_allclose(syncnet.audio_features(enc, mels),
                               syncnet.audio_features(model.audio_encoder, mels), atol=1e-6)
    fig = syncnet.plot_syncnet_history(history)
    assert len(fig.axes) == 2


def test_resume_gives_the_same_weights_as_one_run(talker, tmp_path):
    cfg = CFG.override({"syncnet.eval_every": 3, "syncnet.batch_size": 8})
    syncnet.train_syncnet(talker, cfg, tmp_path / "a", steps=4, progress=False)
    resumed = syncnet.train_syncnet(talker, cfg, tmp_path / "a", steps=7, progress=False)
    syncnet.train_syncnet(talker, cfg, tmp_path / "b", steps=7, progress=False)
    assert resumed.step == 7
    a = syncnet.load_syncnet(tmp_path / "a" / syncnet.LAST_NAME).state_dict()
    b = syncnet.load_syncnet(tmp_path / "b" / syncnet.LAST_NAME).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    steps = [h["step"] for h in resumed.history]
    assert steps == [3, 4, 6, 7]


def test_resume_refuses_other_settings(talker, tmp_path):
    cfg = CFG.override({"syncnet.eval_every": 2, "syncnet.batch_size": 4})
    syncnet.train_syncnet(talker, cfg, tmp_path, steps=2, progress=False)
    other = cfg.override({"syncnet.lr": 1e-2})
    with pytest.raises(Exception, match="other syncnet settings"):
        syncnet.train_syncnet(talker, other, tmp_path, steps=4, progress=False)


# ------------------------------------------------------------------------ offsets


def test_sync_offset_finds_a_known_shift():
    rng = np.random.default_rng(0)
    base = rng.random((120, 16)).astype(np.float32)
    k = 4
    faces, audio_emb = base[:100], base[k: 100 + k]  # audio row i matches face row i + k
    found = syncnet.sync_offset(faces, audio_emb, max_shift=10)
    assert found.offset == -k and found.confidence > 0
    found = syncnet.sync_offset(audio_emb, faces, max_shift=10)
    assert found.offset == k


def test_embed_faces_covers_every_window(talker):
    net = syncnet.SyncNet(CFG.syncnet)
    crops = talker.crops()[:12]
    emb = syncnet.embed_faces(net, crops, batch=3)
    assert emb.shape == (12 - CFG.syncnet.n_frames + 1, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    aud = syncnet.embed_audio(net, talker.mel_windows()[:12])
    assert aud.shape == (12, 512)


def test_syncnet_config_is_part_of_every_preset():
    for name in ("tiny", "cpu", "hd328"):
        scfg = get_config(name).syncnet
        assert isinstance(scfg, SyncNetConfig)
        assert scfg.min_shift < scfg.max_shift and scfg.batch_size % 2 == 0
    assert get_config("cpu").syncnet.audio_channels == (32, 64, 128, 256)
