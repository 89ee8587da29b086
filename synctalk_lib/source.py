"""Where a person's frames come from: a video file, or a SyncTalk_2D `full_body_img/` folder.

Both give frames at the workbench's frame rate, by index, streamed one at a time, so
preprocessing and inference never hold a whole video in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import media


@dataclass(frozen=True)
class VideoFrames:
    """Frames of a video file, resampled to `fps` by ffmpeg (variable frame rate included)."""

    path: Path
    fps: float
    n_frames: int
    width: int
    height: int

    @classmethod
    def open(cls, path: str | Path, fps: float) -> VideoFrames:
        info = media.probe(path)
        if not info.has_video:
            raise media.MediaError(f"{path} has no video stream; give a video of the person")
        n = info.n_frames_at(fps)
        if n <= 0:
            raise media.MediaError(f"{path} has no frames (zero-length video); record again")
        return cls(Path(path), fps, n, info.width, info.height)

    def __len__(self) -> int:
        return self.n_frames

    def iter_frames(self, start: int = 0, count: int | None = None) -> Iterator[np.ndarray]:
        """Yield (H, W, 3) uint8 RGB frames from index `start`."""
        return media.read_frames(self.path, fps=self.fps, start=start, count=count)


_NUMBERED = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class ImageFolderFrames:
    """SyncTalk_2D's `full_body_img/0.jpg, 1.jpg, …` (already at 25 fps)."""

    folder: Path
    files: tuple[Path, ...]
    width: int
    height: int

    @classmethod
    def open(cls, folder: str | Path) -> ImageFolderFrames:
        folder = Path(folder)
        numbered = {}
        for p in folder.iterdir():
            m = _NUMBERED.match(p.name)
            if m:
                numbered[int(m.group(1))] = p
        if not numbered:
            raise media.MediaError(f"{folder} holds no numbered images (0.jpg, 1.jpg, …)")
        n = max(numbered) + 1
        gaps = [i for i in range(n) if i not in numbered]
        if gaps:
            raise media.MediaError(
                f"{folder}: frames {gaps[:5]}{'…' if len(gaps) > 5 else ''} are missing; "
                "frames must be numbered 0..N-1 without gaps"
            )
        first = media.read_image(numbered[0])
        return cls(folder, tuple(numbered[i] for i in range(n)), first.shape[1], first.shape[0])

    def __len__(self) -> int:
        return len(self.files)

    def iter_frames(self, start: int = 0, count: int | None = None) -> Iterator[np.ndarray]:
        stop = len(self.files) if count is None else min(start + count, len(self.files))
        for path in self.files[start:stop]:
            yield media.read_image(path)


FrameSource = VideoFrames | ImageFolderFrames
