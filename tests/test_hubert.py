"""The `hubert` audio mode: local HuBERT loading, chunked features, training and rendering.

The real model (facebook/hubert-large-ls960-ft, 1.2 GB) cannot be fetched here, so the tests
build tiny randomly initialised HuBERTs with the real frame geometry (conv strides 320 samples,
receptive field 400, hidden size 1024) and save them the way `huggingface-cli download` lays
out a folder (config.json + model.safetensors).
"""

from __future__ import annotations

import functools
import sys

import numpy as np
import pytest
import torch
from helpers import short_person

from synctalk_lib import audio, dataset, features, generators, hubert, infer, train
from synctalk_lib.checkpoint import CheckpointError
from synctalk_lib.config import MediaConfig


def _tiny_model(hidden: int = 1024, layers: int = 1, seed: int = 0):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    cfg = HubertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                       intermediate_size=64, conv_dim=(16,) * 7, feat_extract_norm="layer",
                       do_stable_layer_norm=True, num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=16)
    return HubertModel(cfg).eval()


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hubert") / "hubert-large-ls960-ft"
    _tiny_model().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def extractor(hubert_dir) -> hubert.HubertFeatures:
    return hubert.HubertFeatures.load(hubert_dir, device="cpu")


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * 1.5 * t) > 0
    wav = 0.3 * np.sin(2 * np.pi * 180 * t) * voiced + 0.02 * rng.standard_normal(len(t))
    return wav.astype(np.float32)


# ------------------------------------------------------------------------- features


@pytest.mark.parametrize("n", [3000, 16000, 16000 * 3 + 123, 47_999])
def test_one_row_of_two_hubert_frames_per_video_frame(extractor, n):
    feats = extractor(_speech(n / 16000))
    assert feats.shape == (audio.n_video_frames(n, MediaConfig()), 2048)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()
    assert extractor.stride == 320 and extractor.receptive == 400  # 50 Hz, as hubert-large
    assert extractor.normalise  # layer-norm feature extractor, no preprocessor_config.json


def test_audio_is_normalised_so_gain_does_not_matter(extractor):
    wav = _speech(1.0)
    np.testing.assert_allclose(extractor(wav * 5), extractor(wav), atol=1e-4)


def test_chunks_match_one_pass_away_from_their_borders():
    """Without attention layers each frame sees a few hundred ms (convolutions and the
    positional convolution), so chunks with no context differ from one pass only near their
    borders, and chunks with context not at all. (A random attention layer mixes every frame
    with every other; a trained HuBERT's mostly looks nearby.)"""
    model = _tiny_model(layers=0)
    wav = _speech(5.0)
    whole = hubert.HubertFeatures(model, True, chunk_s=60.0)(wav)
    bare = hubert.HubertFeatures(model, True, chunk_s=1.0, context_s=0.0)(wav)
    padded = hubert.HubertFeatures(model, True, chunk_s=1.0, context_s=0.5)(wav)
    np.testing.assert_allclose(padded, whole, atol=1e-4)
    diff = np.abs(bare - whole).max(axis=1)  # per video frame
    near = np.zeros(len(whole), bool)
    for border in range(25, len(whole), 25):  # a chunk is 1 s = 25 video frames
        near[border - 5: border + 5] = True
    assert diff[~near].max() < 1e-4 < diff[near].max()


def test_chunked_attention_model_with_full_context_equals_one_pass(extractor):
    wav = _speech(3.0)
    chunked = hubert.HubertFeatures(extractor.model, True, chunk_s=0.5, context_s=10.0)(wav)
    np.testing.assert_allclose(chunked, extractor(wav), atol=1e-4)


def test_silence_feature_is_the_middle_of_a_zero_waveform(extractor):
    silent = extractor.silence()
    assert silent.shape == (2048,)
    assert np.abs(extractor(np.zeros(16000, np.float32))[12] - silent).max() < 1e-5


# ------------------------------------------------------------------------- the folder


def test_missing_and_incomplete_folders_say_what_to_put_there(tmp_path):
    with pytest.raises(hubert.HubertError, match="config.json.*huggingface-cli download"):
        hubert.HubertFeatures.load(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(hubert.HubertError, match="model.safetensors or pytorch_model.bin "
                                                 "missing"):
        hubert.HubertFeatures.load(tmp_path / "half")


def test_hubert_base_is_refused(tmp_path):
    _tiny_model(hidden=768).save_pretrained(tmp_path / "base")
    with pytest.raises(hubert.HubertError, match="hidden size 768.*needs 1024"):
        hubert.HubertFeatures.load(tmp_path / "base")


def test_without_transformers_the_error_says_what_to_install(hubert_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(hubert.HubertError, match=r"pip install -e '\.\[hubert\]'"):
        hubert.HubertFeatures.load(hubert_dir)


def test_preprocessor_config_decides_normalisation(hubert_dir, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(hubert_dir, folder)
    (folder / "preprocessor_config.json").write_text('{"do_normalize": false, '
                                                     '"sampling_rate": 16000}')
    assert not hubert.HubertFeatures.load(folder).normalise


def test_where_the_weights_are_looked_for(monkeypatch, tmp_path):
    monkeypatch.delenv(hubert.ENV_DIR, raising=False)
    assert hubert.resolve_dir("", tmp_path) == tmp_path / "hubert-large-ls960-ft"
    monkeypatch.setenv(hubert.ENV_DIR, "/data/hubert")
    assert str(hubert.resolve_dir("", tmp_path)) == "/data/hubert"
    assert str(hubert.resolve_dir("/mine", tmp_path)) == "/mine"


# ------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def hubert_person(tmp_path_factory, hubert_dir):
    """A 4 s demo person trained for a few steps on (tiny) HuBERT features."""
    return short_person(tmp_path_factory.mktemp("hubert_person"),
                        {"model.audio_mode": "hubert", "model.hubert_dir": str(hubert_dir)})


def test_training_caches_features_in_synctalk2d_layout(hubert_person):
    root, cfg, result = hubert_person
    ds = dataset.load_dataset("talker", root / "dataset")
    assert result.features_path == ds.paths.folder / "aud_hu.npy"
    stored = np.load(result.features_path)
    assert stored.shape == (ds.n_frames, 2, 1024)
    before = result.features_path.stat().st_mtime_ns
    again = features.hubert_features_for(ds, cfg, hubert.resolve_dir(cfg.model.hubert_dir))
    assert result.features_path.stat().st_mtime_ns == before  # read from the cache
    np.testing.assert_array_equal(again, stored.reshape(ds.n_frames, 2048))
    assert result.generator.step == 4


def test_hubert_and_ave_checkpoints_do_not_mix(hubert_person, tmp_path):
    root, cfg, result = hubert_person
    ave = cfg.override({"model.audio_mode": "ave"})
    with pytest.raises(CheckpointError, match="model.audio_mode='hubert'"):
        generators.load_generator(result.generator.checkpoint, ave)
    ds = dataset.load_dataset("talker", root / "dataset")
    feats = np.zeros((ds.n_frames, 512), np.float32)
    ave_run = train.train_generator(ds, ave, tmp_path, feats, steps=1, progress=False)
    with pytest.raises(CheckpointError, match="model.audio_mode='ave'"):
        generators.load_generator(ave_run.checkpoint, cfg)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_render_with_both_backends(hubert_person, backend, tmp_path):
    root, _, _ = hubert_person
    avatar = infer.Avatar.load("talker", dataset_root=root / "dataset",
                               checkpoints_root=root / "checkpoints", backend=backend)
    assert avatar.backend.name == backend and avatar.speech is not None
    wav = np.concatenate([_speech(0.6), np.zeros(8000, np.float32), _speech(0.4, seed=1)])
    result = avatar.render(wav, tmp_path / "out.mp4", progress=False)
    assert result.n_frames == audio.n_video_frames(len(wav), avatar.cfg.media)
    assert result.path.is_file() and result.silent_frames >= 5
    with pytest.raises(infer.InferError, match="hubert streaming"):
        avatar.stream()


def test_backends_agree_on_hubert_frames(hubert_person):
    root, _, _ = hubert_person
    wav = _speech(0.8)
    frames = [list(infer.Avatar.load("talker", dataset_root=root / "dataset",
                                     checkpoints_root=root / "checkpoints",
                                     backend=b).frames(wav)) for b in ("torch", "onnx")]
    assert len(frames[0]) == len(frames[1]) == 20
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(*frames, strict=True)) <= 2


def test_missing_weights_at_inference_say_where(hubert_person, tmp_path):
    root, _, _ = hubert_person
    with pytest.raises(infer.InferError, match="trained on HuBERT features"):
        infer.Avatar.load("talker", dataset_root=root / "dataset",
                          checkpoints_root=root / "checkpoints",
                          overrides={"model.hubert_dir": str(tmp_path / "gone")})


def test_pauses_get_the_pause_window(hubert_person):
    """Pauses get one audio window: digital silence's or, calibrated, the real window of one
    of the person's own closed-mouth frames (from the cached features the generator was
    trained on)."""
    root, cfg, _ = hubert_person
    load = functools.partial(infer.Avatar.load, "talker", dataset_root=root / "dataset",
                             checkpoints_root=root / "checkpoints", backend="torch")
    digital = load(overrides={"infer.pause_feature": "digital"})
    np.testing.assert_array_equal(digital.pause_window, np.tile(digital.speech_silence, (16, 1)))
    avatar = load()
    ds = dataset.load_dataset("talker", root / "dataset")
    own = features.hubert_features_for(ds, cfg, hubert.resolve_dir(cfg.model.hubert_dir))
    closed = infer.closed_mouth_frames(ds, avatar.cfg)[: infer.PAUSE_CANDIDATES]
    rows = np.clip(closed[:, None] + np.arange(-8, 8)[None], 0, len(own) - 1)
    options = [np.tile(avatar.speech_silence, (16, 1)), *own[rows]]
    assert any(np.allclose(avatar.pause_window, w, atol=1e-6) for w in options)
    wav = np.concatenate([_speech(0.4), np.zeros(16000, np.float32), _speech(0.4, seed=1)])
    with avatar.stream(audio=wav) as live:
        frames = live.push(wav) + live.finish()
        silent = np.array(live.features.silent)
        assert len(frames) == len(silent) == 45 and silent[15:30].all() and not silent[:8].any()
        np.testing.assert_array_equal(live.features.window(22), avatar.pause_window)
    with avatar.stream(audio=wav[:8000]) as other, pytest.raises(
            infer.InferError, match="push the audio the features"):
        other.push(wav)
        other.finish()
