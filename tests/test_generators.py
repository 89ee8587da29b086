"""Finding a person's generator checkpoint: best, latest or a file, with errors that say why."""

import pytest

from synctalk_lib.checkpoint import CheckpointError
from synctalk_lib.generators import BEST, resolve_checkpoint, trained_people


def _person(root, *files):
    folder = root / "may"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_bytes(b"")  # the resolver only looks at names
    return folder


def test_best_is_the_default_and_latest_is_the_newest_rolling_checkpoint(tmp_path):
    folder = _person(tmp_path, "generator_0000010.pt", "generator_0000020.pt", BEST)
    assert resolve_checkpoint("may", tmp_path) == folder / BEST
    assert resolve_checkpoint("may", tmp_path, "best") == folder / BEST
    assert resolve_checkpoint("may", tmp_path, "latest") == folder / "generator_0000020.pt"


def test_a_file_is_taken_as_a_path_or_as_a_name_in_the_persons_folder(tmp_path):
    folder = _person(tmp_path, "generator_0000010.pt", BEST)
    path = folder / "generator_0000010.pt"
    assert resolve_checkpoint("may", tmp_path, path) == path
    assert resolve_checkpoint("may", tmp_path, str(path)) == path
    assert resolve_checkpoint("may", tmp_path, "generator_0000010.pt") == path
    with pytest.raises(CheckpointError, match="generator_0000099.pt not found.*best, latest"):
        resolve_checkpoint("may", tmp_path, "generator_0000099.pt")


def test_without_a_best_checkpoint_best_means_the_newest(tmp_path):
    folder = _person(tmp_path, "generator_0000010.pt", "generator_0000020.pt")
    assert resolve_checkpoint("may", tmp_path) == folder / "generator_0000020.pt"
    assert resolve_checkpoint("may", tmp_path, "best") == folder / "generator_0000020.pt"


def test_latest_without_rolling_checkpoints_is_the_best(tmp_path):
    folder = _person(tmp_path, BEST)
    assert resolve_checkpoint("may", tmp_path, "latest") == folder / BEST


def test_missing_person_or_checkpoints_name_the_fix(tmp_path):
    _person(tmp_path, "generator_0000010.pt")
    (tmp_path / "empty").mkdir()
    assert trained_people(tmp_path) == ["may"]
    with pytest.raises(CheckpointError, match="no trained person 'bob'.*known: may"):
        resolve_checkpoint("bob", tmp_path, "latest")
    with pytest.raises(CheckpointError, match="holds no generator checkpoint.*train --name empty"):
        resolve_checkpoint("empty", tmp_path)
