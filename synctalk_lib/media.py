"""Media I/O: every video, image and audio file goes in and out through this module.

Contract of the whole library: frames are RGB uint8 (H, W, 3); audio is float32 mono in
[-1, 1]. BGR<->RGB conversion happens here and nowhere else. All decoding and encoding uses the
ffmpeg binary shipped by imageio-ffmpeg (there is no ffprobe), so `probe` parses the stream
summary that `ffmpeg -i` prints.

Video is always resampled to a constant rate with ffmpeg's fps filter anchored at the file
start (`start_time=0`): frame i shows what is on screen at time i / fps, for constant, 29.97 and
variable frame rate sources alike. If the video track starts late, its first picture is repeated
to fill the gap, so frame indices stay on the same clock as the audio.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, TYPE_CHECKING

import cv2
import numpy as np
import soundfile as sf

from synctalk_lib import files

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

SEEK_MARGIN_S = 3.0  # fast seek lands this far before `start`: longer than any sane frame gap
STDERR_TAIL = 2000  # characters of ffmpeg's stderr quoted in errors
AAC_BITRATE = "128k"
SWS_FLAGS = "bicubic+accurate_rnd+full_chroma_int"  # RGB<->YUV round trip within ~1 level
_CHANNELS = {"mono": 1, "stereo": 2, "quad": 4, "hexagonal": 6, "octagonal": 8}


class MediaError(RuntimeError):
    """A media file is missing, unreadable or not what the caller expected."""


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _tail(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text.strip()[-STDERR_TAIL:]


def run_ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    """Run ffmpeg to completion; a failure raises MediaError with the command and stderr tail."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", *args]
    log.debug("run %s", shlex.join(cmd))
    try:
        return subprocess.run(cmd, check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise MediaError(
            f"ffmpeg failed (exit {exc.returncode}): {shlex.join(cmd)}\n{_tail(exc.stderr)}"
        ) from None


def _rate(fps: float) -> str:
    """ffmpeg rational for a frame rate, so 29.97002997 becomes exactly 30000/1001."""
    if not fps > 0:
        raise MediaError(f"fps must be positive, got {fps!r}")
    r = Fraction(fps).limit_denominator(1001)
    return f"{r.numerator}/{r.denominator}"


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"no such file: {path} — check the path")
    if path.is_dir():
        raise MediaError(f"{path} is a directory, expected a media file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path} is empty (0 bytes); the recording or copy did not finish — redo it")
    return path


# ---------------------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class MediaInfo:
    """What `ffmpeg -i` reports about a file. width/height are as displayed (after rotation)."""

    path: Path
    duration: float  # seconds, container duration (longest stream)
    has_video: bool
    has_audio: bool
    width: int
    height: int
    fps: float  # average/declared rate of the video stream; 0 if none
    video_codec: str
    audio_codec: str
    audio_rate: int
    audio_channels: int
    container: str = ""  # ffmpeg demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"

    def n_frames_at(self, fps: float | None = 25) -> int:
        """Exact number of frames `read_frames(path, fps)` yields.

        Counted by running the same fps filter into ffmpeg's null muxer (decode only, no
        conversion) because duration * fps is off by one for VFR clips, late-starting tracks and
        rounding at the end; the count is cached per (file, size, mtime, fps).
        """
        st = self.path.stat()
        return _count_frames(str(self.path), st.st_size, st.st_mtime_ns, fps)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Describe a media file; raises MediaError if it is missing, empty or not media."""
    path = _existing(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)]
    text = subprocess.run(cmd, check=False, capture_output=True).stderr.decode(errors="replace")
    if "Input #0" not in text:  # `ffmpeg -i` alone always exits 1; the header means it opened
        raise MediaError(f"{path} is not a video or audio file ffmpeg can read: {_tail(text)}")
    blocks = re.split(r"^\s*Stream #", text, flags=re.MULTILINE)[1:]  # each with its side data
    video = next((b for b in blocks if ": Video: " in b and "(attached pic)" not in b), "")
    audio = next((b for b in blocks if ": Audio: " in b), "")
    if not video and not audio:
        raise MediaError(f"{path} contains no video or audio stream (zero frames?) — re-record it")
    width = height = 0
    fps = 0.0
    if video:
        line = video.splitlines()[0]
        width, height = map(int, re.search(r", (\d+)x(\d+)", line).groups())
        rate = re.search(r"([\d.]+)(k?) fps", line) or re.search(r"([\d.]+)(k?) tbr", line)
        fps = float(rate[1]) * (1000 if rate[2] else 1) if rate else 0.0
        rotation = re.search(r"rotation of (-?[\d.]+) degrees", video, flags=re.IGNORECASE)
        if rotation and round(abs(float(rotation[1]))) % 180 == 90:
            width, height = height, width  # ffmpeg autorotates when decoding
    rate_hz = re.search(r"(\d+) Hz, ([^,]+)", audio)
    layout = rate_hz[2].strip() if rate_hz else ""
    layout_sum = re.match(r"(\d+)\.(\d+)", layout)
    n_channels = re.match(r"(\d+) channels", layout)
    channels = (
        _CHANNELS.get(layout)
        or (int(layout_sum[1]) + int(layout_sum[2]) if layout_sum else 0)
        or (int(n_channels[1]) if n_channels else 0)
    )
    hms = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text)
    duration = int(hms[1]) * 3600 + int(hms[2]) * 60 + float(hms[3]) if hms else 0.0
    if not hms:  # e.g. browser-recorded webm: no duration in the header, so demux to find it
        progress = run_ffmpeg(["-i", str(path), "-c", "copy", "-f", "null", "-progress",
                               "pipe:1", "-nostats", "-"]).stdout.decode()
        times = re.findall(r"out_time_us=(\d+)", progress)
        duration = int(times[-1]) / 1e6 if times else 0.0
    if video and duration <= 0:
        raise MediaError(f"{path} has a video stream with no frames (duration 0) — re-record it")
    return MediaInfo(
        path=path, duration=duration, has_video=bool(video), has_audio=bool(audio),
        width=width, height=height, fps=fps,
        video_codec=re.search(r": Video: (\w+)", video)[1] if video else "",
        audio_codec=re.search(r": Audio: (\w+)", audio)[1] if audio else "",
        audio_rate=int(rate_hz[1]) if rate_hz else 0, audio_channels=channels,
        container=re.search(r"Input #0, (.*?), from ", text)[1],
    )


def _video_filter(fps: float | None, start: int, size: tuple[int, int] | None) -> str:
    """Filter graph shared by reading and counting, so both see the same frames."""
    parts = [f"fps=fps={_rate(fps)}:start_time=0"] if fps else []
    if start:  # after fps the time base is 1/fps, so pts is the output frame index
        parts.append(f"trim=start_pts={start}" if fps else f"trim=start_frame={start}")
    if size:
        parts += [f"scale={size[0]}:{size[1]}", "format=rgb24"]
    return ",".join(parts) or "null"


@functools.lru_cache(maxsize=256)
def _count_frames(path: str, _size: int, _mtime_ns: int, fps: float | None) -> int:
    result = run_ffmpeg(["-i", path, "-map", "0:V:0", "-vf", _video_filter(fps, 0, None),
                         "-fps_mode", "passthrough", "-f", "null", "-progress", "pipe:1",
                         "-nostats", "-"])
    return int(re.findall(r"^frame=(\d+)", result.stdout.decode(), flags=re.MULTILINE)[-1])


# ----------------------------------------------------------------------------------- reading


def read_frames(
    path: str | os.PathLike,
    fps: float | None = 25,
    start: int = 0,
    count: int | None = None,
    size: tuple[int, int] | None = None,
) -> Iterator[np.ndarray]:
    """Stream frames as (H, W, 3) uint8 RGB arrays, one decoded frame in memory at a time.

    Args:
        fps: output rate (fps filter; frame i is time i / fps); None keeps the source frames.
        start: index of the first frame, identical to the start-th frame of a full read.
        count: at most this many frames; None reads to the end.
        size: (width, height) to scale to; None keeps the displayed (rotated) size.

    Arguments and the file are checked now; ffmpeg starts on the first `next()` and is killed
    when the iterator is closed, garbage-collected or abandoned by an exception.
    """
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"{path} has no video stream ({info.audio_codec} audio only)")
    if start < 0 or (count is not None and count < 0):
        raise MediaError(f"start and count must be >= 0, got start={start}, count={count}")
    size = size or (info.width, info.height)  # always scale: fixes the byte layout of a frame
    seek: list[str] = []
    if fps and start / fps > SEEK_MARGIN_S and info.container.startswith("mov,mp4"):
        # demux from the indexed keyframe before start; -copyts -start_at_zero keeps the
        # timestamps of a full read, so the fps filter puts every later frame on the same tick.
        # Other containers (e.g. MPEG-TS) seek approximately, so they decode from the beginning.
        seek = ["-ss", f"{start / fps - SEEK_MARGIN_S:.6f}", "-copyts", "-start_at_zero"]
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", *seek, "-i", str(info.path),
           "-map", "0:V:0", "-vf", _video_filter(fps, start, size), "-fps_mode", "passthrough",
           *(["-frames:v", str(count)] if count is not None else []),
           "-sws_flags", SWS_FLAGS, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    return _stream(cmd, frame_shape(size)) if count != 0 else (f for f in ())


def read_frames_cfr(path: str | os.PathLike, fps: float, start: int, count: int | None,
                    size: tuple[int, int], pixel_format: str = "rgb24") -> Iterator[np.ndarray]:
    """Frames [start, start + count) of a constant-rate file this workbench wrote itself
    (count None: to the end).

    Seeks straight to the keyframe before `start` and decodes from there (no safety margin and
    no fps filter, which `read_frames` needs for arbitrary sources), so with a short keyframe
    interval a random block costs about one GOP of decoding. size: (width, height) of the file.
    pixel_format "yuv420p" yields the decoded planes untouched, (H * 3 / 2, W) uint8 I420
    (`frame_shape`): no colour conversion at all, a third of rgb24's decoding cost at 1080p.
    """
    seek = ["-ss", f"{(start - 0.5) / fps:.6f}"] if start > 0 else []
    convert = (["-vf", _video_filter(None, 0, size), "-sws_flags", SWS_FLAGS]
               if pixel_format == "rgb24" else [])
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", *seek, "-i", str(path),
           "-map", "0:V:0", *convert, *(["-frames:v", str(count)] if count is not None else []),
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", pixel_format, "pipe:1"]
    return _stream(cmd, frame_shape(size, pixel_format))


def frame_shape(size: tuple[int, int], pixel_format: str = "rgb24") -> tuple[int, ...]:
    """Array shape of one raw frame of (width, height) `size`: (H, W, 3) for rgb24, the I420
    layout (H * 3 / 2, W) for yuv420p (Y plane, then the quarter-size U and V planes)."""
    width, height = size
    if pixel_format == "rgb24":
        return (height, width, 3)
    if pixel_format == "yuv420p":
        if width % 2 or height % 2:
            raise MediaError(f"yuv420p frames need an even size, got {width}x{height}")
        return (height * 3 // 2, width)
    raise MediaError(f"unsupported pixel format {pixel_format!r}; use rgb24 or yuv420p")


def _stream(cmd: list[str], shape: tuple[int, ...]) -> Iterator[np.ndarray]:
    log.debug("stream %s", shlex.join(cmd))
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: chatty stderr cannot block
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        try:
            while True:
                frame = np.empty(shape, np.uint8)
                got = _read_into(proc.stdout, memoryview(frame).cast("B"))
                if got == 0:
                    break
                if got < frame.nbytes:
                    raise MediaError(f"ffmpeg stopped mid-frame: {shlex.join(cmd)}\n"
                                     f"{_tail(_read_all(err))}")
                yield frame
            if proc.wait() != 0:
                raise MediaError(f"ffmpeg failed while decoding: {shlex.join(cmd)}\n"
                                 f"{_tail(_read_all(err))}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()  # reap: no zombie


def _read_into(pipe: IO[bytes], buf: memoryview) -> int:
    got = 0
    while got < len(buf):
        n = pipe.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _read_all(f: IO[bytes]) -> bytes:
    f.seek(0)
    return f.read()


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a still image (e.g. SyncTalk_2D `full_body_img/N.jpg`) as (H, W, 3) uint8 RGB."""
    path = _existing(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path} is not an image OpenCV can read (expected jpg/png/bmp/webp)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------- audio


def mono_audio_args(sample_rate: int) -> list[str]:
    """ffmpeg's output options that decode a file's first audio track to mono at sample_rate,
    starting at the file's time 0 (the codec and destination follow them).

    Channels are averaged (rematrix_maxval=1); ffmpeg's plain `-ac 1` sums them at -3 dB, which
    makes a centred stereo voice 1.4x louder and can clip. Sample 0 is the file's time 0, as
    frame 0 of `read_frames` is (first_pts=0): a sound track that starts late is padded with
    silence rather than pulled early, which would put the sound out of sync with the picture.
    """
    mono = f"aresample={sample_rate}:ochl=mono:rematrix_maxval=1:first_pts=0"
    return ["-map", "0:a:0", "-af", mono, "-ac", "1", "-ar", str(sample_rate)]


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio track of any file to (N,) float32 mono in [-1, 1] at sample_rate
    (`mono_audio_args`: channels averaged, sample 0 at the file's time 0)."""
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{path} has no audio track; record with sound or pass the audio "
                         "separately (e.g. a .wav)")
    out = run_ffmpeg(["-i", str(info.path), *mono_audio_args(sample_rate),
                      "-f", "f32le", "pipe:1"]).stdout
    if not out:
        raise MediaError(f"{path} has an audio track with no samples — re-record the audio")
    return np.clip(np.frombuffer(out, "<f4"), -1.0, 1.0).astype(np.float32)


def save_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> None:
    """Write (N,) float audio in [-1, 1] as a 16-bit PCM mono wav, atomically."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise MediaError(f"save_wav expects mono (N,) audio, got shape {audio.shape}")
    with files.atomic_path(path) as tmp:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """(N,) float audio in [-1, 1] as the bytes of a 16-bit PCM wav file (plays everywhere)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate,
             subtype="PCM_16", format="WAV")
    return buf.getvalue()


def image_bytes(rgb: np.ndarray, ext: str = ".jpg", quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB encoded as JPEG (`quality`) or PNG, e.g. for a browser or widget."""
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise MediaError(f"OpenCV could not encode a {rgb.shape} frame as {ext}")
    return buf.tobytes()


# ------------------------------------------------------------------------------ I420 frames


def yuv_region(frame: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The even-aligned rectangle [x0, x1) x [y0, y1) of an I420 frame as its own I420 array.

    Coordinates must be even (a chroma sample covers 2 x 2 pixels); `even_box` makes them so.
    """
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    y_plane = frame[:height]
    chroma = frame[height:].reshape(2, height // 2, width // 2)  # U, V
    h, w = y1 - y0, x1 - x0
    parts = [y_plane[y0:y1, x0:x1], chroma[0, y0 // 2:y1 // 2, x0 // 2:x1 // 2],
             chroma[1, y0 // 2:y1 // 2, x0 // 2:x1 // 2]]
    return np.concatenate([p.reshape(-1) for p in parts]).reshape(h * 3 // 2, w)


def even_box(x0: int, y0: int, x1: int, y1: int, width: int, height: int
             ) -> tuple[int, int, int, int]:
    """[x0, x1) x [y0, y1) grown to even edges and clipped to a (width, height) frame."""
    return (max(x0 - x0 % 2, 0), max(y0 - y0 % 2, 0), min(x1 + x1 % 2, width),
            min(y1 + y1 % 2, height))


# BT.601 limited range, the matrix ffmpeg uses for the untagged yuv420p this workbench writes
_TO_RGB = np.array([[1.164383, 0.0, 1.596027], [1.164383, -0.391762, -0.812968],
                    [1.164383, 2.017232, 0.0]], np.float32)
_TO_YUV = np.array([[0.256788, 0.504129, 0.097906], [-0.148223, -0.290993, 0.439216],
                    [0.439216, -0.367788, -0.071427]], np.float32)


def yuv_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An I420 array (H * 3 / 2, W) as (H, W, 3) uint8 RGB, as ffmpeg converts it here
    (`SWS_FLAGS`): chroma upsampled bicubically, BT.601 limited range. (OpenCV's own I420
    conversion repeats each chroma sample: up to 14 levels off at colour edges, 47.6 dB on a
    1080p face; this one 60 dB.)"""
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    chroma = frame[height:].reshape(2, height // 2, width // 2).astype(np.float32)
    yuv = np.empty((height, width, 3), np.float32)
    yuv[..., 0] = frame[:height]
    yuv[..., 0] -= 16
    for k in (0, 1):
        yuv[..., k + 1] = cv2.resize(chroma[k], (width, height), interpolation=cv2.INTER_CUBIC)
        yuv[..., k + 1] -= 128
    rgb = cv2.transform(yuv, _TO_RGB)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB with H and W even as an I420 array (H * 3 / 2, W), as ffmpeg's accurate
    conversion makes it (BT.601 limited range, each chroma sample the mean of its 2 x 2
    pixels; within one level of ffmpeg's, where OpenCV's own is up to 7 off)."""
    height, width = rgb.shape[:2]
    yuv = cv2.transform(np.ascontiguousarray(rgb).astype(np.float32), _TO_YUV)
    yuv += np.array([16, 128, 128], np.float32)
    out = np.empty((height * 3 // 2, width), np.uint8)
    out[:height] = np.clip(np.rint(yuv[..., 0]), 0, 255)
    chroma = out[height:].reshape(2, height // 2, width // 2)
    for k in (0, 1):
        small = cv2.resize(yuv[..., k + 1], (width // 2, height // 2),
                           interpolation=cv2.INTER_AREA)
        chroma[k] = np.clip(np.rint(small), 0, 255)
    return out


def put_yuv_region(frame: np.ndarray, region: np.ndarray, x0: int, y0: int,
                   changed: np.ndarray | None = None) -> None:
    """Write an I420 `region` (from `yuv_region`) back into `frame` in place at (x0, y0).

    changed: (h, w) bool, the pixels that really differ; only their luma and the chroma
    samples they touch are written, so every other pixel keeps its decoded value exactly
    (a YUV -> RGB -> YUV round trip would move it by a level).
    """
    height, width = frame.shape[0] * 2 // 3, frame.shape[1]
    h, w = region.shape[0] * 2 // 3, region.shape[1]
    y_new = region[:h]
    uv_new = region[h:].reshape(2, h // 2, w // 2)
    y_plane = frame[:height, x0:x0 + w][y0:y0 + h]
    uv_plane = frame[height:].reshape(2, height // 2, width // 2)[
        :, y0 // 2:y0 // 2 + h // 2, x0 // 2:x0 // 2 + w // 2]
    if changed is None:
        y_plane[...], uv_plane[...] = y_new, uv_new
        return
    np.copyto(y_plane, y_new, where=changed)
    block = changed.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))
    np.copyto(uv_plane, uv_new, where=block[None])


# ------------------------------------------------------------------------------------ writing


VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".m4v")  # containers that hold H.264 + AAC


class VideoWriter:
    """Stream RGB frames into an H.264 mp4 (yuv420p, faststart), atomically.

    The frame size is fixed by the first frame. Odd sizes are padded by one black row/column at
    the bottom/right (yuv420p needs even sizes; padding keeps pixel coordinates unchanged).

    Audio (a file, or a float32 array at sample_rate) is muxed as AAC in a second, copy-only
    pass once the frame count is known, padded with silence or cut to exactly
    frames_written / fps: the video length is the authority. (One pass with `apad -shortest`
    overshot by up to 1 s in testing.) The file appears at `path` only after a successful close;
    an exception in the `with` block or `abort()` kills ffmpeg and leaves nothing behind.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float = 25,
        crf: int = 18,
        preset: str = "medium",
        audio: str | os.PathLike | np.ndarray | None = None,
        sample_rate: int = 16000,
        gop: int | None = None,
        pixel_format: str = "rgb24",
    ) -> None:
        self.path = Path(path)
        try:  # now, not at the rename after a whole render
            files.check_writable_file(self.path)
        except ValueError as exc:
            raise MediaError(str(exc)) from None
        if self.path.suffix.lower() not in VIDEO_SUFFIXES:
            raise MediaError(f"{self.path}: a video file name must end in "
                             f"{' or '.join(VIDEO_SUFFIXES)} (ffmpeg picks the format by it)")
        self.fps, self.crf, self.preset = fps, crf, preset
        frame_shape((2, 2), pixel_format)  # refuses an unknown format now
        self.pixel_format = pixel_format  # yuv420p: frames are I420 planes, encoded unconverted
        self.gop = gop  # fixed keyframe interval: any frame decodes after at most gop - 1 others
        self.frames_written = 0
        self._rate = _rate(fps)
        self._audio = audio
        self._sample_rate = sample_rate
        if isinstance(audio, np.ndarray) and audio.ndim != 1:
            raise MediaError(f"audio array must be mono (N,), got shape {audio.shape}")
        if audio is not None and not isinstance(audio, np.ndarray):
            info = probe(audio)
            if not info.has_audio:
                raise MediaError(f"{audio} has no audio track to mux into {self.path}")
            self._sample_rate = info.audio_rate
        self._shape: tuple[int, ...] | None = None
        self._proc: subprocess.Popen | None = None
        self._stack = contextlib.ExitStack()  # temp output, temp video and wav, stderr file

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self.pixel_format == "yuv420p":
            height = height * 2 // 3
        self._out = self._stack.enter_context(files.atomic_path(self.path))
        self._video = self._out if self._audio is None else self._temp(self.path.parent, ".mp4")
        self._stderr = self._stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-y",
               "-f", "rawvideo", "-pix_fmt", self.pixel_format, "-video_size", f"{width}x{height}",
               "-framerate", self._rate, "-i", "pipe:0"]
        if width % 2 or height % 2:
            log.info("padding %dx%d frames to even size for yuv420p", width, height)
            cmd += ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]
        cmd += ["-sws_flags", SWS_FLAGS, "-c:v", "libx264", "-preset", self.preset, "-crf",
                str(self.crf), "-pix_fmt", "yuv420p"]
        if self.gop:
            cmd += ["-g", str(self.gop), "-keyint_min", str(self.gop), "-sc_threshold", "0"]
        cmd += ["-movflags", "+faststart", str(self._video)]
        log.debug("encode %s", shlex.join(cmd))
        self._cmd = cmd
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=self._stderr)

    def _temp(self, folder: Path, suffix: str) -> Path:
        path = files.owned_temp(f".{self.path.name}.", suffix, folder, family=".")
        self._stack.callback(path.unlink, missing_ok=True)
        return path

    def _mux_audio(self) -> None:
        audio = self._audio
        if isinstance(audio, np.ndarray):  # system temp: never beside the output
            audio, samples = self._temp(Path(tempfile.gettempdir()), ".wav"), audio
            sf.write(audio, np.clip(samples.astype(np.float32), -1, 1), self._sample_rate,
                     subtype="FLOAT")
        end = round(self.frames_written / self.fps * self._sample_rate)
        run_ffmpeg(["-i", str(self._video), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
                    "-c:v", "copy", "-af", f"apad,atrim=end_sample={end}", "-c:a", "aac",
                    "-b:a", AAC_BITRATE, "-movflags", "+faststart", str(self._out)])

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (yuv420p: one (H * 3 / 2, W) I420 frame)."""
        if self.pixel_format == "yuv420p":
            if frame.dtype != np.uint8 or frame.ndim != 2 or frame.shape[0] % 3 or \
                    frame.shape[1] % 2:
                raise MediaError(f"yuv420p frames must be (H * 3 / 2, W) uint8 I420 with H and "
                                 f"W even, got {frame.shape} {frame.dtype}")
        elif frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise MediaError(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        if self._proc is None:
            if self._shape is not None:
                raise MediaError(f"{self.path} is already closed; open a new VideoWriter")
            self._shape = frame.shape
            self._start(frame)
        elif frame.shape != self._shape:
            raise MediaError(f"frame {self.frames_written} is {frame.shape}, but the first frame "
                             f"fixed the size at {self._shape}; resize frames before writing")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, ValueError, OSError):
            raise self._failure("ffmpeg stopped accepting frames") from None
        self.frames_written += 1

    def close(self) -> Path:
        """Finish encoding (and mux the audio), then move the file into place."""
        if self._proc is None:
            self.abort()
            state = "was already closed" if self._shape else "got no frames; nothing saved"
            raise MediaError(f"VideoWriter for {self.path} {state}")
        with contextlib.suppress(OSError):  # a dead ffmpeg is reported by its exit code
            self._proc.stdin.close()
        if self._proc.wait() != 0:
            raise self._failure("ffmpeg failed to finish the video")
        self._proc = None
        try:
            if self._audio is not None:
                self._mux_audio()
        except BaseException:
            self.abort()
            raise
        self._stack.close()  # renames the temp file onto path, deletes the other temp files
        log.info("wrote %s (%d frames)", self.path, self.frames_written)
        return self.path

    def abort(self) -> None:
        """Kill ffmpeg and delete the partial output."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            self._proc = None
        aborted = MediaError("aborted")  # an exception makes atomic_path discard the temp file
        self._stack.__exit__(MediaError, aborted, None)

    def _failure(self, what: str) -> MediaError:
        tail = _tail(_read_all(self._stderr))
        cmd = shlex.join(self._cmd)
        self.abort()
        return MediaError(f"{what} writing {self.path}: {cmd}\n{tail}")


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], **kw) -> Path:
    """Write all `frames` with a VideoWriter (same keywords); returns the path."""
    with VideoWriter(path, **kw) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


__all__ = [
    "MediaError",
    "MediaInfo",
    "VideoWriter",
    "ffmpeg_exe",
    "load_audio",
    "mono_audio_args",
    "probe",
    "read_frames",
    "read_image",
    "run_ffmpeg",
    "save_wav",
    "write_video",
]
