"""A recording's audio features per video frame, computed once and cached in its dataset.

Training and inference both need them (inference for the pause feature's candidates), so
they live here rather than in either (`ave`, `whisper` and `hubert` features alike): dataset/<name>/<stem>.npy, with a key file in the
dataset's cache that names what they were computed from; a changed key recomputes them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import files, whisper
from .config import Config
from .dataset import PreparedDataset

if TYPE_CHECKING:
    import torch


def cached_features(ds: PreparedDataset, stem: str, key_parts: dict[str, Any],
                    source: dict[str, str], compute: Callable[[], np.ndarray]) -> np.ndarray:
    """dataset/<name>/<stem>.npy, computed once and again only when `key_parts` change."""
    target = ds.paths.folder / f"{stem}.npy"
    key_file = ds.paths.cached(f"{stem}.json")
    key = files.digest_of(key_parts)
    if (target.is_file() and key_file.is_file()
            and json.loads(key_file.read_text()).get("key") == key):
        return np.load(target)
    feats = compute()
    files.save_npy(target, feats)
    files.save_json(key_file, {"key": key, **source})
    return feats


def whisper_features_for(ds: PreparedDataset, extractor: whisper.WhisperFeatures,
                         source: str, semitones: float = 0.0) -> np.ndarray:
    """(T, dim) `whisper` features of the recording, cached as dataset/<name>/aud_whisper.npy,
    keyed on the model's files, the windowing and layers, and the audio. semitones: of the
    recording pitch-shifted by this much instead (`train.audio_variants`), cached beside them
    as aud_whisper_pitch<+n>.npy."""
    key = {"whisper": whisper.source_digest(source), "layers": list(extractor.layers),
           "hop": extractor.hop, "context": extractor.context,
           "audio": ds.meta["stages"].get("audio"), "n": ds.n_frames}
    stem = "aud_whisper"
    if semitones:
        key["semitones"] = float(semitones)
        stem = f"aud_whisper_pitch{semitones:+g}"

    def compute() -> np.ndarray:
        wav = ds.wav()
        if semitones:
            wav = pitch_shifted(wav, extractor.media.sample_rate, semitones)
        return extractor(wav, ds.n_frames)

    return cached_features(ds, stem, key, {"whisper": str(source)}, compute)


def pitch_shifted(wav: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """The sound `semitones` higher (lower when negative), same length and timing: librosa's
    phase vocoder and resampling; formants move with the pitch, as between people."""
    import librosa

    return librosa.effects.pitch_shift(np.asarray(wav, np.float32), sr=sample_rate,
                                       n_steps=float(semitones)).astype(np.float32)


def audio_features_for(ds: PreparedDataset, cfg: Config, encoder_source: Path,
                       encoder: torch.nn.Module, device: str | None = None) -> np.ndarray:
    """(T, 512) `ave` features per frame, cached as dataset/<name>/aud_ave.npy.

    The cache is keyed on the encoder's weights file and the mel settings, so retraining
    SyncNet (or pointing at SyncTalk_2D's `audio_visual_encoder.pth`) recomputes them.
    """
    from . import syncnet

    key = {"encoder": files.file_digest(encoder_source),
           "mel": ds.meta["stages"].get("mel"), "n": ds.n_frames}
    return cached_features(
        ds, "aud_ave", key, {"encoder": str(encoder_source)},
        lambda: syncnet.audio_features(encoder, np.asarray(ds.mel_windows()),
                                       device=device).astype(np.float32))


def hubert_features_for(ds: PreparedDataset, cfg: Config, hubert_dir: Path,
                        device: str | None = None) -> np.ndarray:
    """(T, 2048) `hubert` features per frame, cached as dataset/<name>/aud_hu.npy in
    SyncTalk_2D's (T, 2, 1024) layout, keyed on the HuBERT folder's files and the audio."""
    from . import hubert

    def compute() -> np.ndarray:
        extractor = hubert.HubertFeatures.load(hubert_dir, cfg.media, device)
        feats = extractor(ds.wav(), ds.n_frames)
        return feats.reshape(ds.n_frames, hubert.FRAMES_PER_VIDEO_FRAME, -1)

    key = {"hubert": hubert.source_digest(hubert_dir),
           "audio": ds.meta["stages"].get("audio"), "n": ds.n_frames}
    feats = cached_features(ds, "aud_hu", key, {"hubert": str(hubert_dir)}, compute)
    return feats.reshape(ds.n_frames, -1)


def check_dim(extractor: whisper.WhisperFeatures, cfg: Config, where: str) -> None:
    """A generator trained on one Whisper's features cannot read another's: say which."""
    if cfg.model.audio_dim and cfg.model.audio_dim != extractor.dim:
        raise whisper.WhisperError(
            f"{where} was trained on Whisper features of {cfg.model.audio_dim} values a frame, "
            f"but {extractor.name} with layers {list(extractor.layers)} gives {extractor.dim} "
            "(another model size or layer choice); use the Whisper model it was trained with "
            "(whisper.model_dir) or train again")
