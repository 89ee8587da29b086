"""Shared fixtures: small synthetic clips made on the fly (nothing downloaded)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import load_avatar, write_face_video

os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8 RGB, a real face


@pytest.fixture(scope="session")
def face_video(tmp_path_factory, astronaut) -> Path:
    """2 s of the astronaut drifting, with speech-like audio: dataset/face/face.mp4."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "face").mkdir()
    return write_face_video(root / "face" / "face.mp4", astronaut)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Small test models run fastest on one thread, and two threads on a busy 2-core machine
    spin against each other (seen: 50x slower steps). Benchmarks, not tests, measure speed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class TrainedPerson:
    name: str
    dataset_root: Path
    checkpoints_root: Path
    heldout_wav: Path


@pytest.fixture(scope="session")
def trained_person(tmp_path_factory) -> TrainedPerson:
    """A 10 s demo person, preprocessed and trained with the `tiny` preset (~1 min): enough
    for inference and serving tests, not for quality."""
    from synctalk_lib import demo, preprocess, train
    from synctalk_lib.config import get_config

    root = tmp_path_factory.mktemp("person")
    paths = demo.make_demo(root / "dataset", "talker", seconds=10, lead_silence=1.0)
    cfg = get_config("tiny")
    preprocess.preprocess("talker", root=root / "dataset", cfg=cfg, progress=False)
    train.train_person("talker", cfg, dataset_root=root / "dataset",
                       checkpoints_root=root / "checkpoints", steps=20, syncnet_steps=50,
                       progress=False)
    return TrainedPerson("talker", root / "dataset", root / "checkpoints", paths.heldout_wav)


@pytest.fixture(scope="module")
def avatar(trained_person):
    """The trained test person on ONNX Runtime (test_server has its own)."""
    return load_avatar(trained_person, backend="onnx")


@pytest.fixture(scope="module")
def speech(trained_person) -> np.ndarray:
    """4 s of the test person's held-out speech, its lead silence skipped."""
    from synctalk_lib import media

    wav = media.load_audio(trained_person.heldout_wav)
    first = int(np.argmax(np.abs(wav) > 0.05))
    return wav[first: first + 16000 * 4]
