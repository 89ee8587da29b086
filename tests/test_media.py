"""Tests of synctalk_lib.media on small synthetic clips made with ffmpeg's lavfi sources."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import pytest
import soundfile as sf

from synctalk_lib import media
from synctalk_lib.media import MediaError

FPS = 25
SR = 16_000
SAMPLES_PER_FRAME = SR // FPS  # tolerance of audio lengths: one video frame


def _make(path: Path, *args: str) -> Path:
    media.run_ffmpeg([*args, str(path)])
    return path


def _x264(*extra: str) -> list[str]:
    return ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *extra]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    src = "testsrc2=size=160x120:duration="
    c = {
        "av25": _make(d / "av25.mp4", "-f", "lavfi", "-i", f"{src}2:rate=25", "-f", "lavfi",
                      "-i", "sine=f=440:sample_rate=44100:duration=2", *_x264(), "-c:a", "aac"),
        "v30": _make(d / "v30.mp4", "-f", "lavfi", "-i", f"{src}2.3:rate=30", *_x264()),
        "v2997": _make(d / "v2997.mp4", "-f", "lavfi", "-i", f"{src}2.3:rate=30000/1001",
                       *_x264()),
        # 6 s at 29.97 fps with a keyframe every 40 frames: long enough to exercise fast seeking
        "long": _make(d / "long.mp4", "-f", "lavfi", "-i", f"{src}6:rate=30000/1001",
                      *_x264("-g", "40", "-bf", "2")),
        # variable frame rate: 1 s of red at 30 fps, then 1 s of blue at 10 fps
        "vfr": _make(d / "vfr.mp4", "-filter_complex",
                     "color=c=red:r=30:d=1:s=64x48[a];color=c=blue:r=10:d=1:s=64x48[b];"
                     "[a][b]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-fps_mode", "vfr", *_x264()),
        # the picture starts 0.4 s after the sound (as when a camera app starts audio first)
        "late": _make(d / "late.mp4", "-f", "lavfi", "-i", "sine=d=5", "-itsoffset", "0.4",
                      "-f", "lavfi", "-i", f"{src}4.6:rate=25", *_x264("-g", "30"), "-c:a", "aac"),
        # the sound starts 0.4 s after the picture (a muxer's audio track that begins late)
        "late_audio": _make(d / "late_audio.mp4", "-f", "lavfi", "-i", f"{src}3:rate=25",
                            "-itsoffset", "0.4", "-f", "lavfi", "-i",
                            "sine=f=440:sample_rate=16000:d=2.6", "-map", "0:v", "-map", "1:a",
                            *_x264(), "-c:a", "aac"),
        # timestamps starting at 1.3 s (as in clips cut from streams): frame 0 is still the first
        "offset": _make(d / "offset.mp4", "-f", "lavfi", "-i", f"{src}3.2:rate=25",
                        *_x264("-g", "30"), "-output_ts_offset", "1.3"),
        # as recorded by a browser (MediaRecorder): no duration in the header
        "live": _make(d / "live.webm", "-f", "lavfi", "-i", f"{src}2:rate=25", "-c:v", "libvpx",
                      "-deadline", "realtime", "-live", "1"),
        "mp3": _make(d / "tone.mp3", "-f", "lavfi", "-i", "sine=f=300:sample_rate=44100:d=1.5",
                     "-ac", "2"),
        "m4a": _make(d / "tone.m4a", "-f", "lavfi", "-i", "sine=f=300:sample_rate=44100:d=1.5",
                     "-ac", "2", "-c:a", "aac"),
    }
    c["rot"] = _make(d / "rot.mp4", "-display_rotation", "90", "-i", str(c["av25"]), "-c", "copy")
    t = np.arange(int(1.5 * 44100)) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 300 * t)
    sf.write(d / "stereo.wav", np.stack([tone, tone], axis=1), 44100)
    c["stereo"] = d / "stereo.wav"
    (d / "notes.mp4").write_text("this is not a video\n")
    c["text"] = d / "notes.mp4"
    (d / "empty.mp4").touch()
    c["empty"] = d / "empty.mp4"
    return c


def _coded_frames(n: int, h: int = 64, w: int = 96) -> list[np.ndarray]:
    """Frames whose red and green levels encode their index."""
    frames = []
    for i in range(n):
        f = np.full((h, w, 3), 128, np.uint8)
        f[..., 0], f[..., 1] = 20 + 5 * i, 230 - 5 * i
        frames.append(f)
    return frames


def _sine(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


class PopenSpy(subprocess.Popen):
    """Records every ffmpeg process media starts."""

    started: ClassVar[list[subprocess.Popen]] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        PopenSpy.started.append(self)


@pytest.fixture
def popen_spy(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen]:
    PopenSpy.started = []
    monkeypatch.setattr(media.subprocess, "Popen", PopenSpy)
    return PopenSpy.started


def _is_gone(proc: subprocess.Popen) -> bool:
    """Exited and reaped (no zombie): waitpid has run, and the pid no longer exists."""
    if proc.returncode is None:
        return False
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


# ------------------------------------------------------------------------------------- probe


def test_probe_reports_streams_of_synthetic_clip(clips):
    info = media.probe(clips["av25"])
    assert (info.width, info.height, info.fps) == (160, 120, 25.0)
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.has_video and info.has_audio
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")
    assert (info.audio_rate, info.audio_channels) == (44100, 1)
    assert info.n_frames_at(FPS) == 50


def test_probe_of_audio_file_has_no_video(clips):
    info = media.probe(clips["mp3"])
    assert not info.has_video and info.has_audio
    assert (info.audio_codec, info.audio_rate, info.audio_channels) == ("mp3", 44100, 2)
    assert info.fps == 0 and info.width == 0


def test_probe_measures_duration_missing_from_header(clips):
    info = media.probe(clips["live"])
    assert info.duration == pytest.approx(2.0, abs=0.05)
    assert info.n_frames_at(FPS) == 50


def test_probe_reports_displayed_size_of_rotated_clip(clips):
    info = media.probe(clips["rot"])
    assert (info.width, info.height) == (120, 160)
    first = next(media.read_frames(clips["rot"]))
    assert first.shape == (160, 120, 3)


# ----------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("name", ["v30", "v2997"])
def test_30fps_source_resamples_to_25fps_and_count_is_exact(clips, name):
    info = media.probe(clips[name])
    frames = list(media.read_frames(clips[name], FPS))
    assert abs(len(frames) - round(info.duration * FPS)) <= 1
    assert info.n_frames_at(FPS) == len(frames)
    assert info.n_frames_at(None) == len(list(media.read_frames(clips[name], None)))
    assert all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)


def test_vfr_frame_i_shows_time_i_over_fps(clips):
    frames = list(media.read_frames(clips["vfr"], FPS))
    colours = "".join("r" if f[..., 0].mean() > f[..., 2].mean() else "b" for f in frames)
    assert colours == "r" * 25 + "b" * 25
    assert media.probe(clips["vfr"]).n_frames_at(FPS) == 50


@pytest.mark.parametrize("margin", [media.SEEK_MARGIN_S, 0.3], ids=["decode", "fast_seek"])
def test_start_and_count_match_slices_of_full_read(clips, monkeypatch, margin):
    monkeypatch.setattr(media, "SEEK_MARGIN_S", margin)
    full = list(media.read_frames(clips["long"], FPS))
    assert len(full) == 150
    assert not np.array_equal(full[0], full[1])  # frames differ, so equality below means a lot
    for start, count in [(0, 3), (1, 4), (37, 5), (80, 2), (120, None), (149, 5), (150, 2)]:
        part = list(media.read_frames(clips["long"], FPS, start=start, count=count))
        expected = full[start : None if count is None else start + count]
        assert len(part) == len(expected), (start, count)
        assert all(np.array_equal(a, b) for a, b in zip(part, expected)), (start, count)


def test_late_video_track_is_padded_onto_the_audio_clock(clips, monkeypatch):
    frames = list(media.read_frames(clips["late"], FPS))
    first_picture = next(media.read_frames(clips["late"], None))
    assert all(np.array_equal(f, first_picture) for f in frames[:11])  # 0.4 s = 10 frames
    assert not np.array_equal(frames[11], first_picture)
    assert len(frames) == media.probe(clips["late"]).n_frames_at(FPS) == 125
    monkeypatch.setattr(media, "SEEK_MARGIN_S", 0.3)
    part = list(media.read_frames(clips["late"], FPS, start=100, count=3))
    assert all(np.array_equal(a, b) for a, b in zip(part, frames[100:103], strict=True))


def test_file_starting_late_on_its_own_clock_reads_from_frame_zero(clips, monkeypatch):
    frames = list(media.read_frames(clips["offset"], FPS))
    assert len(frames) == 80
    assert np.array_equal(frames[0], next(media.read_frames(clips["offset"], None)))
    assert not np.array_equal(frames[0], frames[1])
    monkeypatch.setattr(media, "SEEK_MARGIN_S", 0.3)
    part = list(media.read_frames(clips["offset"], FPS, start=60, count=3))
    assert all(np.array_equal(a, b) for a, b in zip(part, frames[60:63], strict=True))


def test_start_without_resampling_counts_source_frames(clips):
    full = list(media.read_frames(clips["v30"], None))
    part = list(media.read_frames(clips["v30"], None, start=10, count=3))
    assert all(np.array_equal(a, b) for a, b in zip(part, full[10:13], strict=True))


def test_size_scales_frames(clips):
    frames = list(media.read_frames(clips["av25"], FPS, count=2, size=(81, 47)))
    assert [f.shape for f in frames] == [(47, 81, 3)] * 2


def test_closing_generator_early_kills_ffmpeg(clips, popen_spy):
    gen = media.read_frames(clips["long"])
    next(gen)
    gen.close()
    for frame in media.read_frames(clips["long"]):
        break
    del frame
    with pytest.raises(KeyError):
        for _ in media.read_frames(clips["long"]):
            raise KeyError("consumer failed")
    readers = [p for p in popen_spy if "rawvideo" in p.args]
    assert len(readers) == 3
    assert all(_is_gone(p) for p in popen_spy)


def test_exhausted_generator_leaves_no_process(clips, popen_spy):
    assert len(list(media.read_frames(clips["av25"], count=7))) == 7
    (reader,) = [p for p in popen_spy if "rawvideo" in p.args]
    assert reader.returncode == 0 and _is_gone(reader)


# ----------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("audio_s", [1.0, 3.0], ids=["audio_shorter", "audio_longer"])
def test_written_video_round_trips_frames_and_audio(tmp_path, audio_s):
    n = 37
    path = media.write_video(tmp_path / "out.mp4", _coded_frames(n), audio=_sine(audio_s),
                             preset="ultrafast")
    info = media.probe(path)
    assert (info.fps, info.width, info.height, info.has_audio) == (25.0, 96, 64, True)
    assert info.duration == pytest.approx(n / FPS, abs=0.03)
    back = list(media.read_frames(path))
    assert len(back) == n == info.n_frames_at(FPS)
    for i, frame in enumerate(back):
        assert frame.shape == (64, 96, 3)
        assert np.abs(frame.reshape(-1, 3).mean(0) - (20 + 5 * i, 230 - 5 * i, 128)).max() < 3
    audio = media.load_audio(path)
    assert abs(len(audio) - n / FPS * SR) <= SAMPLES_PER_FRAME


def test_writer_muxes_audio_file_to_video_length(tmp_path, clips):
    with media.VideoWriter(tmp_path / "out.mp4", audio=clips["mp3"], preset="ultrafast") as w:
        for frame in _coded_frames(20):
            w.write(frame)
    assert w.frames_written == 20
    audio = media.load_audio(tmp_path / "out.mp4")
    assert abs(len(audio) - 20 / FPS * SR) <= SAMPLES_PER_FRAME
    assert np.abs(audio).max() > 0.05


def test_writer_pads_odd_size_to_even(tmp_path):
    frames = _coded_frames(3, h=47, w=81)
    path = media.write_video(tmp_path / "odd.mp4", frames, preset="ultrafast")
    back = list(media.read_frames(path))
    assert back[0].shape == (48, 82, 3)
    assert np.abs(back[0][:47, :81].astype(int) - frames[0]).mean() < 3


def test_exception_inside_writer_leaves_nothing(tmp_path, popen_spy):
    out = tmp_path / "out"
    with pytest.raises(KeyError), media.VideoWriter(out / "v.mp4", audio=_sine(1)) as w:
        for frame in _coded_frames(5):
            w.write(frame)
        raise KeyError("boom")
    assert list(out.iterdir()) == []
    assert len(popen_spy) == 1 and _is_gone(popen_spy[0])  # the encoder


def test_writer_reports_ffmpeg_death(tmp_path, popen_spy):
    with (
        pytest.raises(MediaError, match="ffmpeg stopped accepting frames"),
        media.VideoWriter(tmp_path / "v.mp4") as w,
    ):
        w.write(_coded_frames(1)[0])
        popen_spy[0].kill()
        popen_spy[0].wait()
        for frame in _coded_frames(40):
            w.write(frame)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_frames(tmp_path):
    with pytest.raises(MediaError, match="fixed the size"), media.VideoWriter(
        tmp_path / "v.mp4"
    ) as w:
        w.write(_coded_frames(1)[0])
        w.write(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(MediaError, match="uint8"):
        media.VideoWriter(tmp_path / "w.mp4").write(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(MediaError, match="got no frames"), media.VideoWriter(tmp_path / "e.mp4"):
        pass
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------- audio


@pytest.mark.parametrize("name", ["mp3", "m4a", "stereo"])
def test_load_audio_gives_16k_mono_float32(clips, name):
    audio = media.load_audio(clips[name])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 1.5 * SR) <= SAMPLES_PER_FRAME
    assert np.abs(audio).max() <= 1.0


def test_load_audio_averages_stereo_channels(clips):
    audio = media.load_audio(clips["stereo"])
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.01)  # ffmpeg's -ac 1 would give 0.71


def test_load_audio_reads_video_sound_track(clips):
    audio = media.load_audio(clips["av25"], sample_rate=8000)
    assert abs(len(audio) - 2 * 8000) <= 8000 // FPS


def test_load_audio_of_a_late_sound_track_starts_at_the_pictures_zero(clips):
    """Frame i is the picture at i / fps from the file's zero (read_frames); sample j must be
    the sound at j / rate from the same zero, so a track that starts late is padded with
    silence instead of being pulled 0.4 s (10 frames) early."""
    assert media.probe(clips["late_audio"]).has_audio
    audio = media.load_audio(clips["late_audio"])
    first_sound = np.flatnonzero(np.abs(audio) > 0.05)[0] / SR
    assert first_sound == pytest.approx(0.4, abs=1 / FPS)
    assert abs(len(audio) - 3.0 * SR) <= 2 * SAMPLES_PER_FRAME
    on_time = media.load_audio(clips["av25"])  # a track starting at zero is unchanged
    assert np.flatnonzero(np.abs(on_time) > 0.05)[0] / SR < 1 / FPS


def test_save_wav_writes_16bit_pcm(tmp_path):
    media.save_wav(tmp_path / "a.wav", _sine(0.5), SR)
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"
    back = media.load_audio(tmp_path / "a.wav")
    assert np.abs(back - _sine(0.5)).max() < 1e-3
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


# -------------------------------------------------------------------------------------- images


def test_read_image_returns_rgb(tmp_path):
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "1.png"), bgr)
    rgb = media.read_image(tmp_path / "1.png")
    assert rgb.shape == (4, 6, 3) and rgb[0, 0].tolist() == [0, 0, 255]


# ------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("call", "clip", "message"),
    [
        (media.probe, "missing", "no such file"),
        (media.read_frames, "missing", "check the path"),
        (media.load_audio, "missing", "no such file"),
        (media.probe, "text", "not a video or audio file ffmpeg can read"),
        (media.read_frames, "text", "Invalid data"),
        (media.probe, "empty", "is empty"),
        (media.load_audio, "v30", "no audio track; record with sound"),
        (media.read_frames, "mp3", "no video stream"),
        (media.read_image, "text", "not an image"),
        (media.read_image, "missing", "no such file"),
    ],
)
def test_bad_inputs_raise_media_error_with_fix(clips, tmp_path, call, clip, message):
    path = tmp_path / "nowhere.mp4" if clip == "missing" else clips[clip]
    with pytest.raises(MediaError, match=message):
        call(path)


def test_run_ffmpeg_failure_quotes_command_and_stderr(tmp_path):
    with pytest.raises(MediaError, match=r"(?s)ffmpeg failed.*nowhere\.mp4.*No such file"):
        media.run_ffmpeg(["-i", str(tmp_path / "nowhere.mp4"), "-f", "null", "-"])
