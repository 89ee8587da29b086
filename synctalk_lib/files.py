"""Atomic file output and content digests.

Every artefact the workbench writes goes through `atomic_path`: it is written under a temporary
name beside its destination and renamed only when complete, so an interrupted run never leaves
a truncated video, array or checkpoint where a later step would trust it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` when the block succeeds.

    The temporary name keeps `dest`'s extension (ffmpeg picks the container from it) unless
    `suffix` is given. On an exception the temporary file is removed and `dest` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{dest.name}.", suffix=suffix if suffix is not None else dest.suffix,
        dir=dest.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes it private (0600); give it normal permissions
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `dest`; it replaces `dest` when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_npy(dest: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array atomically."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def save_json(dest: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically (indented, so users can read reports and metadata)."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in JSON")


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes: SHA-1, the identity used in cache keys (renames do not
    invalidate), or another hashlib algorithm (sha256 for checking a published file)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def digest_of(data: Any) -> str:
    """Stable short digest of JSON-serialisable settings, for cache keys."""
    text = json.dumps(data, sort_keys=True, default=_json_default)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def torch_hub_checkpoints() -> Path:
    """Where torch keeps downloaded weights ($TORCH_HOME/hub/checkpoints). The workbench only
    reads optional weights from there; it never downloads."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints"
