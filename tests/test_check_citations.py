"""The citation check of `make lint` (scripts/check_citations.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "check_citations", REPO / "scripts" / "check_citations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


check_citations = _load_script()


def cite(name: str, section: int | None = None) -> str:
    """A citation, built here so that this file's own text cites nothing."""
    return f"docs/{name}.md" + ("" if section is None else f" §{section}")


def test_broken_citations_and_links_are_reported_good_ones_are_not(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "design.md").write_text(
        "# Notes\n\n<a id=\"s1\"></a>\n## 1. Data layout\n\n## 2. Crop geometry\n")
    (tmp_path / "synctalk_lib").mkdir()
    (tmp_path / "synctalk_lib" / "crop.py").write_text(
        f'"""Crop geometry ({cite("design", 2)})."""\n'  # good
        f"# the box ({cite('design', 7)})\n"  # broken: no section 7
        f"# see {'DESIGN' + '.md'} §2\n")  # broken: the old name
    (tmp_path / "README.md").write_text(
        "[crop](docs/design.md#2-crop-geometry) [data](docs/design.md#s1)\n"  # good
        "[gone](docs/design.md#3-generator)\n")  # broken: no such heading

    problems = check_citations.check(tmp_path)

    assert [(p.path, p.line) for p in problems] == [
        ("README.md", 2), ("synctalk_lib/crop.py", 2), ("synctalk_lib/crop.py", 3)]
    assert "#3-generator" in problems[0].message
    assert "docs/design.md has no section §7 (its numbered sections: §1, §2)" in str(problems[1])
    assert "cite docs/design.md" in problems[2].message
    assert check_citations.check(REPO) == []  # and the repository itself is clean
