"""Quiet runs: native libraries' log chatter and Jupyter's transport warning stay hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from synctalk_lib import quiet

REPO = Path(__file__).resolve().parents[1]


def test_hidden_chatter_keeps_other_output(capfd):
    with quiet.native_chatter_hidden():
        os.write(2, b"W0000 00:00:1796148721.400734   12353 some_file.cc:114] chatter\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"E0000 00:00:1796148721.400734   12353 some_file.cc:9] a real error\n")
        print("a line of our own", file=sys.stderr)
    err = capfd.readouterr().err
    assert "chatter" not in err and "XNNPACK" not in err
    assert "a real error" in err and "a line of our own" in err


def test_notebook_runs_without_the_kernel_transport_warning(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("papermill")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "t.ipynb")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "run_notebooks.py"), "--out",
                           str(tmp_path / "out"), str(tmp_path / "t.ipynb")],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "without encryption" not in proc.stderr, proc.stderr[-2000:]
    out = nbformat.read(tmp_path / "out" / "t.ipynb", 4)
    assert out.cells[0].outputs[0]["text"] == "42\n"
