"""Atomic writes and owned temp files: a run killed with SIGKILL leaves nothing for long."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from synctalk_lib import files

REPO = Path(__file__).resolve().parents[1]

# a child that starts an atomic write beside `out` and an owned file in the temp folder, then
# dies by SIGKILL mid-way, as `infer` killed during a render does
KILLED_MID_WRITE = """
import os, signal, sys
from synctalk_lib import files
out, temp = sys.argv[1], sys.argv[2]
with files.atomic_path(out) as tmp:
    tmp.write_bytes(b"half a video")
    files.owned_temp("synctalk-audio-", ".wav", temp).write_bytes(b"RIFF" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_run(out: Path, temp: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(out), str(temp)],
                          check=False, cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(files, "_cleaned", set())  # as in a new process


def test_a_later_run_removes_what_a_killed_run_left(tmp_path, fresh_cache):
    out, temp = tmp_path / "videos" / "talk.mp4", tmp_path / "tmp"
    temp.mkdir()
    _killed_run(out, temp)
    left = sorted(p.name for p in [*out.parent.iterdir(), *temp.iterdir()])
    assert len(left) == 2 and all("~" in name for name in left), left  # owner in the name
    assert not out.exists()
    with files.atomic_path(out.parent / "other.mp4") as tmp:  # the next run, same folders
        tmp.write_bytes(b"ok")
        with files.temp_file("synctalk-audio-", ".wav", temp) as wav:
            wav.write_bytes(b"RIFF")
            assert list(temp.iterdir()) == [wav]  # the killed run's wav is gone
    assert [p.name for p in out.parent.iterdir()] == ["other.mp4"]
    assert not list(temp.iterdir())


def test_files_of_live_or_unknown_owners_are_kept(tmp_path, fresh_cache):
    mine = files.owned_temp(".a.mp4.", ".mp4", tmp_path)  # this (live) process
    host = "0000" if files._HOST_TAG != "0000" else "0001"
    foreign = tmp_path / f".b.mp4.~1-{host}~x.mp4"  # another host's run (shared disk), recent
    foreign.write_bytes(b"")
    untagged = tmp_path / ".c.mp4.tmpabc.mp4"  # no owner tag: not ours to judge
    untagged.write_bytes(b"")
    assert files.remove_stale(tmp_path, ".") == []
    old = os.path.getmtime(foreign) - files.STALE_FOREIGN_S - 10
    os.utime(foreign, (old, old))
    assert files.remove_stale(tmp_path, ".") == [foreign]
    assert mine.exists() and untagged.exists()


def test_atomic_path_refuses_a_folder_at_once(tmp_path):
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(ValueError, match="is a folder"), files.atomic_path(tmp_path / "out.mp4"):
        pytest.fail("the block must not run")
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_system_temp_is_the_default(fresh_cache):
    with files.temp_file("synctalk-test-", ".bin") as path:
        assert path.parent == Path(tempfile.gettempdir()) and f"~{os.getpid()}-" in path.name
    assert not path.exists()


KILLED_SERVER = """
import os, signal, sys
from synctalk_lib import files
folder = files.owned_temp_dir("synctalk-server-", sys.argv[1])
(folder / "upload.wav").write_bytes(b"RIFF" * 1000)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_servers_temp_folder_goes_when_the_next_one_starts(tmp_path, fresh_cache):
    proc = subprocess.run([sys.executable, "-c", KILLED_SERVER, str(tmp_path)], check=False,
                          cwd=REPO, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (left,) = tmp_path.iterdir()
    assert (left / "upload.wav").is_file()
    mine = files.owned_temp_dir("synctalk-server-", tmp_path)
    assert list(tmp_path.iterdir()) == [mine]
