"""Which real frame of the person carries each output frame, and reading those frames fast.

Output frames walk forward and back through the person's footage ("bouncing", as
SyncTalk_2D), so the body keeps moving naturally for any audio length. In "core" mode a
silent stretch of the new audio jumps to real idle footage (frames where the person was
silent in the recording) and plays it untouched; when speech resumes the walk continues from
there, so only the entry into silence is a cut, placed where the head pose is closest.

Bouncing reads frames backwards, which an H.264 source with long keyframe intervals makes
slow. `TemplateReader` therefore decodes from a cached copy with a keyframe every few frames,
holding only a couple of such blocks in memory. A render reads through a `TemplateCursor`
instead: one ffmpeg process decodes the forward half of each bounce as it plays (a new
process per block costs about 0.1 s of CPU, 6-9 ms a 1080p frame), the backward half comes
from the frames just played and then from a few keyframe blocks decoded at once, and it can
hand out the decoded yuv420p planes themselves, so no pixel is colour-converted that the
paste-back does not touch.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict, deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import files, media
from .progress import progress_bar
from .source import FrameSource, ImageFolderFrames, VideoFrames

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


def silent_runs(silent: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """[start, stop) of each run of True at least `min_length` long."""
    runs, start = [], None
    for i, s in enumerate([*np.asarray(silent, bool).tolist(), False]):
        if s and start is None:
            start = i
        elif not s and start is not None:
            if i - start >= min_length:
                runs.append((start, i))
            start = None
    return runs


class TemplatePlan:
    """Chooses the template frame of each output frame, one call at a time (streamable).

    n_frames: frames of the person; start: first template frame; idle_runs: [start, stop)
    runs of real footage to play during silence (core mode; empty = plain bouncing);
    centres: (n_frames, 2) face positions, used to enter idle footage where the head is.
    """

    def __init__(self, n_frames: int, start: int = 0,
                 idle_runs: list[tuple[int, int]] | None = None,
                 centres: np.ndarray | None = None) -> None:
        if n_frames < 1:
            raise ValueError("a person needs at least one frame")
        if not 0 <= start < n_frames:
            raise ValueError(f"start frame {start} is outside the person's 0..{n_frames - 1}")
        self.n_frames, self.position, self.step = n_frames, start, 1
        self.idle_runs = list(idle_runs or [])
        self.centres = centres
        self.range = (0, n_frames)
        self.idle = False

    def next(self, silent: bool = False) -> int:
        """Template index for the next output frame; `silent` = this frame's audio is silence."""
        if silent and self.idle_runs and not self.idle:
            self._enter_idle()
        elif not silent and self.idle:
            self.idle, self.range = False, (0, self.n_frames)
        current = self.position
        lo, hi = self.range
        if hi - lo > 1:
            if not lo <= current + self.step < hi:
                self.step = -self.step
            self.position = current + self.step
        return current

    def _enter_idle(self) -> None:
        frames = np.concatenate([np.arange(a, b) for a, b in self.idle_runs])
        if self.centres is not None:
            dist = np.linalg.norm(self.centres[frames] - self.centres[self.position], axis=1)
            target = int(frames[np.argmin(dist)])
        else:
            target = int(frames[np.argmin(np.abs(frames - self.position))])
        self.range = next((a, b) for a, b in self.idle_runs if a <= target < b)
        self.position, self.idle = target, True


def loop_back_sequence(n_out: int, n_frames: int, start: int = 0) -> np.ndarray:
    """Bouncing templates for `n_out` frames that end back on `start`: the first half walks
    out, the second half retraces it, so consecutive clips (or a looped one) join smoothly."""
    plan = TemplatePlan(n_frames, start)
    out_half = [plan.next() for _ in range((n_out + 1) // 2)]
    return np.array(out_half + out_half[: n_out // 2][::-1], np.int64)


# ------------------------------------------------------------------------------ reading


def template_video(frames: VideoFrames, cache_dir: Path, gop: int, crf: int = 12,
                   progress: bool = True) -> Path:
    """A copy of the person's video with a keyframe every `gop` frames (built once, cached).

    CRF 12 is visually lossless; the output is encoded once more at the user's CRF.
    """
    stat = frames.path.stat()
    key = files.digest_of({"source": str(frames.path.resolve()), "size": stat.st_size,
                           "mtime": stat.st_mtime_ns, "fps": frames.fps, "gop": gop, "crf": crf})
    target = cache_dir / f"templates_g{gop}.mp4"
    key_file = cache_dir / f"templates_g{gop}.json"
    if target.is_file() and key_file.is_file() and \
            json.loads(key_file.read_text()).get("key") == key:
        return target
    log.info("caching the person's frames with a keyframe every %d frames (once)", gop)
    with media.VideoWriter(target, fps=frames.fps, crf=crf, preset="veryfast", gop=gop) as out:
        for frame in progress_bar(frames.iter_frames(), total=len(frames), desc="template cache",
                                  unit="frame", enabled=progress):
            out.write(frame)
    files.save_json(key_file, {"key": key, "frames": len(frames)})
    return target


class TemplateReader:
    """Frames by index in any order, holding at most `keep` blocks of `block` frames."""

    def __init__(self, source: FrameSource, cache_dir: Path | None = None, block: int = 16,
                 keep: int = 2, progress: bool = True) -> None:
        self.source, self.block, self.keep = source, block, keep
        self.n_frames = len(source)
        self._blocks: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._video: Path | None = None
        if isinstance(source, VideoFrames):
            self._video = template_video(source, cache_dir or source.path.parent, block,
                                         progress=progress)
            self._size = (source.width, source.height)
        elif not isinstance(source, ImageFolderFrames):
            raise TypeError(f"unsupported frame source {type(source).__name__}")

    def __len__(self) -> int:
        return self.n_frames

    @property
    def yuv_ok(self) -> bool:
        """Whether `cursor("yuv420p")` works: a video source of even width and height."""
        return self._video is not None and not (self._size[0] % 2 or self._size[1] % 2)

    def cursor(self, pixel_format: str = "rgb24") -> TemplateCursor:
        """A reader for one consumer (a render or a stream) that walks the frames in order."""
        return TemplateCursor(self, pixel_format)

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < self.n_frames:
            raise IndexError(f"template frame {index} outside 0..{self.n_frames - 1}")
        first = index - index % self.block
        if first not in self._blocks:
            self._blocks[first] = self._read(first)
            while len(self._blocks) > self.keep:
                self._blocks.popitem(last=False)
        self._blocks.move_to_end(first)
        return self._blocks[first][index - first]

    def _read(self, first: int) -> list[np.ndarray]:
        count = min(self.block, self.n_frames - first)
        if self._video is not None:
            frames = list(media.read_frames_cfr(self._video, self.source.fps, first, count,
                                                self._size))
        else:
            frames = list(self.source.iter_frames(first, count))
        if len(frames) != count:
            raise media.MediaError(f"template frames {first}..{first + count - 1}: decoded "
                                   f"{len(frames)} of {count}; delete the cache and retry")
        return frames


class TemplateCursor:
    """Frames of a `TemplateReader` for one consumer, fast when read as bouncing reads them.

    A forward step continues one ffmpeg decoder (started again at any jump); a backward step
    takes the frame from the last `recent` frames that decoder gave, else from a run of
    `back_blocks` keyframe blocks decoded by one process and held until the walk leaves it.
    Memory: at most max(`recent`, `back_blocks` x gop) frames (at 1080p in yuv420p, 3.1 MB
    each: 100 MB with the defaults, half what the reader's two rgb24 blocks hold).
    pixel_format "yuv420p": (H * 3 / 2, W) I420 planes as decoded (needs `reader.yuv_ok`);
    "rgb24": frames equal to `reader[i]`. Not thread-safe: one cursor per consumer; `close`
    (or garbage collection) ends ffmpeg.
    """

    def __init__(self, reader: TemplateReader, pixel_format: str = "rgb24", recent: int = 16,
                 back_blocks: int = 2) -> None:
        if pixel_format not in ("rgb24", "yuv420p"):
            raise ValueError(f"unsupported pixel format {pixel_format!r}")
        if pixel_format == "yuv420p" and not reader.yuv_ok:
            raise ValueError("yuv420p frames need a video source of even width and height")
        self.reader, self.pixel_format = reader, pixel_format
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=recent)
        self._back: dict[int, np.ndarray] = {}
        self._back_span = back_blocks * reader.block
        self._forward: Iterator[np.ndarray] | None = None
        self._next = -1  # index the forward decoder yields next
        self._last = -1  # index asked for last
        self.processes = 0  # ffmpeg processes started (for tests and benchmarks)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the forward decoder and drop the held frames."""
        if self._forward is not None:
            self._forward.close()
        self._forward, self._next = None, -1
        self._recent.clear()
        self._back.clear()

    def __getitem__(self, index: int) -> np.ndarray:
        reader = self.reader
        if not 0 <= index < reader.n_frames:
            raise IndexError(f"template frame {index} outside 0..{reader.n_frames - 1}")
        if reader._video is None:  # an image folder: every frame is its own file
            return reader[index]
        if index == self._next:
            frame = self._step()
        else:
            frame = next((f for i, f in self._recent if i == index), None)
            if frame is None:
                frame = self._back.get(index)
            if frame is None:  # a backward step decodes blocks; a jump restarts the decoder
                frame = self._back_run(index) if index == self._last - 1 else self._start(index)
        self._last = index
        return frame

    def _start(self, index: int) -> np.ndarray:
        if self._forward is not None:
            self._forward.close()
        self._back = {}  # the walk has left the held run (forward past it, or a jump)
        reader = self.reader
        self._forward = media.read_frames_cfr(reader._video, reader.source.fps, index, None,
                                              reader._size, self.pixel_format)
        self.processes += 1
        self._next = index
        return self._step()

    def _step(self) -> np.ndarray:
        try:
            frame = next(self._forward)
        except StopIteration:
            raise media.MediaError(f"template frame {self._next}: the cached video ended "
                                   "early; delete the cache and retry") from None
        self._recent.append((self._next, frame))
        self._next += 1
        return frame

    def _back_run(self, index: int) -> np.ndarray:
        """Decode the keyframe blocks that end with `index`'s and hold them (instead of the
        frames held so far: the walk has left those behind)."""
        self._back, self._recent = {}, deque(maxlen=self._recent.maxlen)
        reader = self.reader
        stop = index - index % reader.block + reader.block
        first = max(stop - self._back_span, 0)
        count = min(stop, reader.n_frames) - first
        frames = list(media.read_frames_cfr(reader._video, reader.source.fps, first, count,
                                            reader._size, self.pixel_format))
        self.processes += 1
        if len(frames) != count:
            raise media.MediaError(f"template frames {first}..{first + count - 1}: decoded "
                                   f"{len(frames)} of {count}; delete the cache and retry")
        self._back = dict(enumerate(frames, first))
        return self._back[index]
