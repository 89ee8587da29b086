"""A person's dataset folder: its layout and the reader of what preprocessing cached.

`preprocess.py` writes the folder (its docstring lists the files); training, inference and
evaluation read it through `load_dataset` and `PreparedDataset`, so reading a dataset never
imports the preprocessing pipeline or the recording check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import landmarks, media
from .config import Config
from .source import FrameSource, ImageFolderFrames, VideoFrames

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".flv")


class PreprocessError(RuntimeError):
    """The input cannot be preprocessed, or a dataset is not (fully) preprocessed; the message
    says what to change."""


@dataclass(frozen=True)
class DatasetPaths:
    """File layout of one person's dataset folder."""

    folder: Path
    name: str

    @classmethod
    def of(cls, name: str, root: str | Path = "dataset") -> DatasetPaths:
        if not name or Path(name).name != name or name.startswith("."):
            raise PreprocessError(f"invalid dataset name {name!r}: use a plain folder name")
        return cls(Path(root) / name, name)

    @property
    def aud_wav(self) -> Path:
        return self.folder / "aud.wav"

    @property
    def landmarks_dir(self) -> Path:
        return self.folder / "landmarks"

    @property
    def full_body_img(self) -> Path:
        return self.folder / "full_body_img"

    @property
    def aud_mel(self) -> Path:
        return self.folder / "aud_mel.npy"

    @property
    def cache(self) -> Path:
        return self.folder / "cache"

    @property
    def meta(self) -> Path:
        return self.cache / "meta.json"

    def cached(self, name: str) -> Path:
        return self.cache / name

    def find_video(self) -> Path | None:
        for ext in VIDEO_EXTENSIONS:
            for stem in (self.name, self.name.lower()):
                candidate = self.folder / f"{stem}{ext}"
                if candidate.is_file():
                    return candidate
        return None


@dataclass
class PreparedDataset:
    """A preprocessed person: paths, metadata and loaders for the cached arrays."""

    paths: DatasetPaths
    meta: dict[str, Any]

    @property
    def n_frames(self) -> int:
        return int(self.meta["n_frames"])

    @property
    def config(self) -> Config:
        """The settings the dataset was preprocessed with."""
        return Config.from_dict(self.meta["config"])

    @property
    def scheme(self) -> landmarks.Scheme:
        return landmarks.SCHEMES[self.meta["scheme"]]

    def points(self) -> np.ndarray:
        return np.load(self.paths.cached("points.npy"))

    def found(self) -> np.ndarray:
        return np.load(self.paths.cached("found.npy"))

    def boxes(self) -> np.ndarray:
        return np.load(self.paths.cached("boxes.npy"))

    def crops(self) -> np.ndarray:
        """(T, S, S, 3) uint8 RGB, memory-mapped: indexing reads only the frames asked for."""
        return np.load(self.paths.cached(self.meta["crops_file"]), mmap_mode="r")

    def mel_windows(self) -> np.ndarray:
        return np.load(self.paths.aud_mel, mmap_mode="r")

    def wav(self) -> np.ndarray:
        return media.load_audio(self.paths.aud_wav, self.meta["sample_rate"])

    def frames(self) -> FrameSource:
        """The person's frames at the workbench fps, streamed from the source."""
        src = self.meta["source"]
        if src["kind"] == "video":
            return VideoFrames.open(self.paths.folder / src["file"], self.meta["fps"])
        return ImageFolderFrames.open(self.paths.full_body_img)

    def check(self) -> dict[str, Any]:
        return json.loads(self.paths.cached("check.json").read_text())


def load_dataset(name: str, root: str | Path = "dataset") -> PreparedDataset:
    """Open a preprocessed dataset; a clear error says how to preprocess it if it is not."""
    paths = DatasetPaths.of(name, root)
    if not paths.meta.is_file():
        raise PreprocessError(
            f"dataset {name!r} in {paths.folder} is not preprocessed; run "
            f"`python -m synctalk_lib preprocess --name {name}` or notebooks/01_preprocess.ipynb"
        )
    meta = json.loads(paths.meta.read_text())
    if not meta.get("complete"):
        raise PreprocessError(
            f"preprocessing of {name!r} did not finish; run it again (finished stages are kept)"
        )
    return PreparedDataset(paths, meta)
