import numpy as np
import pytest

from synctalk_lib import audio
from synctalk_lib.config import get_config

CFG = get_config("tiny")


def test_mel_has_80_frames_per_second_and_80_bands():
    wav = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    mel = audio.melspectrogram(wav, CFG.audio)
    assert mel.shape == (1 + len(wav) // 200, 80)
    assert mel.dtype == np.float32
    assert -4 <= mel.min() and mel.max() <= 4


def test_mel_windows_give_25_per_second_aligned_with_frames():
    sr = 16000
    wav = np.zeros(sr * 4, np.float32)
    # broadband noise exactly during video frames 50..59 (2.0 s .. 2.4 s)
    burst = np.random.default_rng(1).normal(0, 0.2, int(0.4 * sr))
    wav[2 * sr: int(2.4 * sr)] = burst
    mel = audio.melspectrogram(wav, CFG.audio)
    n_frames = audio.n_video_frames(len(wav), CFG.media)
    windows = audio.frame_mel_windows(mel, n_frames, CFG.audio, CFG.media)
    assert n_frames == 100
    assert windows.shape == (100, 80, 16)
    energy = windows.mean(axis=(1, 2))
    # a window starts at its frame's time and spans 0.2 s (5 frames)
    loud = np.flatnonzero(energy > energy.min() + 1.0)
    assert loud.min() >= 45 and loud.max() <= 60
    assert 50 in loud and 59 in loud
    assert energy[30] < energy[55] - 2 and energy[80] < energy[55] - 2


def test_windows_past_the_end_are_clamped_not_broken():
    mel = np.zeros((20, 80), np.float32)
    windows = audio.frame_mel_windows(mel, 10, CFG.audio, CFG.media)
    assert windows.shape == (10, 80, 16)
    short = audio.frame_mel_windows(np.zeros((5, 80), np.float32), 2, CFG.audio, CFG.media)
    assert short.shape == (2, 80, 16)


def test_stereo_input_is_a_clear_error():
    with pytest.raises(ValueError, match="mono"):
        audio.melspectrogram(np.zeros((2, 1600), np.float32), CFG.audio)
