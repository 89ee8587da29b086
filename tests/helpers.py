"""Helpers for tests: synthetic talking-face clips, the optional shared sample data and the
system Chromium for the browser tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_clip(name: str) -> Path:
    """A clip from ../shared/data; the test is skipped on machines without it."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} not present (sample data exists only on the project's machines)")
    return path


def moving_face_frames(image: np.ndarray, n: int, blank: set[int] = frozenset()):
    """The photo drifting a few pixels, as a steady speaker does; `blank` frames are grey."""
    import cv2

    h, w = image.shape[:2]
    for i in range(n):
        if i in blank:
            yield np.full_like(image, 128)
            continue
        dx, dy = 3 * np.sin(i / 9), 2 * np.cos(i / 13)
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        yield cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def speechlike_audio(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """Bursts of harmonic tone with pauses: loud and quiet stretches like speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((140, 280, 420, 700), 1))
    envelope = (np.sin(2 * np.pi * 2.5 * t) > 0).astype(np.float32)
    envelope[: int(0.5 * sr)] = 0
    return (0.2 * tone * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def write_face_video(path: Path, image: np.ndarray, n: int = 50, audio: bool = True,
                     blank: set[int] = frozenset()) -> Path:
    from synctalk_lib import media

    sound = speechlike_audio(n / 25) if audio else None
    with media.VideoWriter(path, fps=25, preset="ultrafast", audio=sound) as writer:
        for frame in moving_face_frames(image, n, blank):
            writer.write(frame)
    return path


def short_person(root: Path, overrides: dict):
    """A 4 s demo person, preprocessed and trained for a few steps with the `tiny` preset and
    `overrides` (an audio mode, say): (root, cfg, train.PersonResult). Enough to load and
    render, not for quality."""
    from synctalk_lib import demo, preprocess, train
    from synctalk_lib.config import get_config

    demo.make_demo(root / "dataset", "talker", seconds=4, lead_silence=0.5)
    cfg = get_config("tiny", {"syncnet.val_fraction": 0.3, "train.heldout_fraction": 0.0,
                              "train.val_fraction": 0.2, **overrides})
    preprocess.preprocess("talker", root=root / "dataset", cfg=cfg, progress=False)
    result = train.train_person("talker", cfg, dataset_root=root / "dataset",
                                checkpoints_root=root / "checkpoints", steps=4, syncnet_steps=10,
                                progress=False)
    return root, cfg, result


# ------------------------------------------------------------------------------ the browser

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
NO_CHROMIUM = "no Chromium on this machine (Debian: apt-get install -y chromium)"


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@cache
def chromium() -> str | None:
    """The system Chromium, installed from Debian packages when missing if we are root on
    Debian/Ubuntu (~25 s; SYNCTALK_INSTALL_CHROMIUM=0 turns that off); None when it can't be
    had. Playwright drives it as it is: no browser download (there is no network for one)."""
    found = _find_chromium()
    may_install = (os.environ.get("SYNCTALK_INSTALL_CHROMIUM", "1") != "0"
                   and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"))
    if found or not may_install:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                ["apt-get", "update"],
                ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if cmd[1] == "install" and done.returncode == 0:
            return _find_chromium()
    return None


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_avatar(person, **kw):
    """The trained test person as an `infer.Avatar` (kw: Avatar.load's, e.g. backend=)."""
    from synctalk_lib import infer

    return infer.Avatar.load(person.name, dataset_root=person.dataset_root,
                             checkpoints_root=person.checkpoints_root, **kw)
