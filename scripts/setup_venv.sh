#!/usr/bin/env bash
# Creates .venv and installs everything the workbench needs; safe to re-run (a stamp file
# skips the work when pyproject.toml has not changed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ] && [ "$STAMP" -nt scripts/setup_venv.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check"
# torch first with an exact pin: on CPU machines this takes the CPU wheel instead of a
# multi-GB CUDA build; TORCH_SPEC overrides it (e.g. a CUDA build on a GPU machine).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  $PIP install "${TORCH_SPEC:-torch==2.13.0}"
fi
$PIP install -e ".[dev]"
# mediapipe 0.10.21, the reference landmark backend (the default, facemesh, runs the same
# models on LiteRT), is the last release with the face models and the legacy face_mesh API.
# Its metadata asks for numpy<2, jax and the GUI opencv, none of which it needs for face mesh,
# so it goes in without dependencies; pyproject lists what it does need. It has no Python 3.13
# wheel, so there the workbench goes without it (docs/landmarks.md).
if "$VENV/bin/python" -c "import sys; sys.exit(sys.version_info >= (3, 13))"; then
  $PIP install --no-deps "mediapipe==0.10.21"
fi
# librosa's first mel call compiles numba kernels (~16 s); pay that once here.
"$VENV/bin/python" -c "import librosa, numpy as np; librosa.feature.melspectrogram(y=np.zeros(16000, np.float32), sr=16000)" >/dev/null
# the venv's kernel, inside the venv (not ~/.local): notebooks ask for "python3", and JupyterLab
# lists it under a name that says which environment it is
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 \
  --display-name "Python 3 (SyncTalk .venv)" >/dev/null
touch "$STAMP"
