"""Which real frame of the person carries each output frame, and reading those frames fast.

Output frames walk forward and back through the person's footage ("bouncing", as
SyncTalk_2D), so the body keeps moving naturally for any audio length. In "core" mode a
silent stretch of the new audio jumps to real idle footage (frames where the person was
silent in the recording) and plays it untouched; when speech resumes the walk continues from
there, so only the entry into silence is a cut, placed where the head pose is closest.

Bouncing reads frames backwards, which an H.264 source with long keyframe intervals makes
slow. `TemplateReader` therefore decodes from a cached copy with a keyframe every few frames,
holding only a couple of such blocks in memory.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from . import files, media
from .progress import progress_bar
from .source import FrameSource, ImageFolderFrames, VideoFrames

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


def template_video(frames: VideoFrames, cache_dir: Path, gop: int, crf: int = 12) -> Path:
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
                                  unit="frame"):
            out.write(frame)
    files.save_json(key_file, {"key": key, "frames": len(frames)})
    return target


class TemplateReader:
    """Frames by index in any order, holding at most `keep` blocks of `block` frames."""

    def __init__(self, source: FrameSource, cache_dir: Path | None = None, block: int = 16,
                 keep: int = 2) -> None:
        self.source, self.block, self.keep = source, block, keep
        self.n_frames = len(source)
        self._blocks: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._video: Path | None = None
        if isinstance(source, VideoFrames):
            self._video = template_video(source, cache_dir or source.path.parent, block)
            self._size = (source.width, source.height)
        elif not isinstance(source, ImageFolderFrames):
            raise TypeError(f"unsupported frame source {type(source).__name__}")

    def __len__(self) -> int:
        return self.n_frames

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
