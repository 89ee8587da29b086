"""Atomic file output and content digests.

Every artefact the workbench writes goes through `atomic_path`: it is written under a temporary
name beside its destination and renamed only when complete, so an interrupted run never leaves
a truncated video, array or checkpoint where a later step would trust it.

A run killed with SIGKILL cannot delete its temporary files, so their names carry the owner
(`~<pid>-<host tag>~`, see `owned_temp`), and the first temporary file a later run makes in a
folder removes the stale ones there: the owner's pid is gone on this host, or (another host's,
on a shared disk) the file is older than `STALE_FOREIGN_S`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


STALE_FOREIGN_S = 3600.0  # another host's temp file this old is abandoned
_HOST_TAG = f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFF:04x}"
_OWNER = re.compile(r"~(\d+)-([0-9a-f]{4})~")
_cleaned: set[tuple[str, str]] = set()  # (folder, prefix) already cleaned by this process


def _owner_tag() -> str:
    return f"~{os.getpid()}-{_HOST_TAG}~"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Delete files and folders `prefix*~<pid>-<host>~*` in `folder` whose owner is gone;
    returns the removed."""
    removed = []
    now = time.time()
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _OWNER.search(entry.name)
            if not entry.name.startswith(prefix) or not match or entry.is_symlink():
                continue
            pid, host = int(match.group(1)), match.group(2)
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            stale = not _pid_alive(pid) if host == _HOST_TAG else age > STALE_FOREIGN_S
            if stale:
                with contextlib.suppress(OSError):
                    if entry.is_dir():
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def owned_temp(prefix: str, suffix: str = "", folder: str | os.PathLike | None = None,
               family: str | None = None) -> Path:
    """A new empty file `<prefix>~<pid>-<host>~<random><suffix>` in `folder` (default: the
    system temp folder); the caller deletes it. The first call per folder and family (a
    common start of such names, default `prefix`) in a process removes the stale files of
    that family there (`remove_stale`): one scan per folder, however many files follow."""
    folder = _claim(folder, prefix if family is None else family)
    fd, name = tempfile.mkstemp(prefix=prefix + _owner_tag(), suffix=suffix, dir=folder)
    os.close(fd)
    return Path(name)


def owned_temp_dir(prefix: str, folder: str | os.PathLike | None = None) -> Path:
    """`owned_temp` for a folder (a server's uploads and videos): a killed owner's goes later."""
    return Path(tempfile.mkdtemp(prefix=prefix + _owner_tag(), dir=_claim(folder, prefix)))


def _claim(folder: str | os.PathLike | None, family: str) -> Path:
    """The folder (default: system temp), cleaned of stale `family` entries once a process."""
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    key = (str(folder.resolve()), family)
    if key not in _cleaned:
        _cleaned.add(key)
        for path in remove_stale(folder, family):
            log.info("removed %s, left behind by a killed run", path)
    return folder


@contextlib.contextmanager
def temp_file(prefix: str, suffix: str = "", folder: str | os.PathLike | None = None
              ) -> Iterator[Path]:
    """`owned_temp` for the block's duration, deleted however the block ends."""
    path = owned_temp(prefix, suffix, folder)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def check_writable_file(dest: str | os.PathLike) -> Path:
    """`dest` as a Path, or ValueError when it cannot become a file (an existing folder):
    checked before work whose result would otherwise be lost at the final rename."""
    dest = Path(dest)
    if dest.is_dir():
        raise ValueError(f"{dest} is a folder; give a file path (e.g. {dest / 'out'}"
                         f"{dest.suffix or '.mp4'})")
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` when the block succeeds.

    The temporary name keeps `dest`'s extension (ffmpeg picks the container from it) unless
    `suffix` is given. On an exception the temporary file is removed and `dest` is untouched.
    ValueError at once if `dest` is an existing folder.
    """
    dest = check_writable_file(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = owned_temp(f".{dest.name}.", suffix if suffix is not None else dest.suffix,
                     dest.parent, family=".")
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
