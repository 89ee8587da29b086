"""Dependencies point one way: shared tools <- dataset <- networks <- training, and inference
and evaluation use networks and the dataset, never training or the preprocessing pipeline; the
server stays off matplotlib and the notebook widgets. Each import runs in a fresh interpreter,
so one test's imports cannot hide another's."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def loaded_by(module: str) -> frozenset[str]:
    """Every module in sys.modules after importing `module` (this checkout's package)."""
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted(sys.modules)))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return frozenset(json.loads(run.stdout.splitlines()[-1]))


def _found(module: str, forbidden: list[str]) -> list[str]:
    loaded = loaded_by(module)
    return [name for name in forbidden
            if name in loaded or any(m.startswith(name + ".") for m in loaded)]


INFERENCE_AND_EVALUATION = ["synctalk_lib.infer", "synctalk_lib.evaluate",
                            "synctalk_lib.person_eval", "synctalk_lib.voices",
                            "synctalk_lib.server"]


@pytest.mark.parametrize("module", INFERENCE_AND_EVALUATION)
def test_inference_and_evaluation_never_import_training(module):
    assert _found(module, ["synctalk_lib.train"]) == []


@pytest.mark.parametrize("module", INFERENCE_AND_EVALUATION)
def test_reading_a_dataset_does_not_import_the_preprocessing_pipeline(module):
    assert _found(module, ["synctalk_lib.preprocess", "synctalk_lib.check"]) == []


def test_the_server_loads_no_plotting_or_notebook_widgets():
    assert _found("synctalk_lib.server", ["matplotlib", "ipywidgets", "anywidget",
                                          "synctalk_lib.figures", "synctalk_lib.widgets"]) == []


@pytest.mark.parametrize("module", ["synctalk_lib.unet", "synctalk_lib.syncnet",
                                    "synctalk_lib.syncnet_v2"])
def test_networks_do_not_import_the_recording_check_or_the_pipeline(module):
    assert _found(module, ["synctalk_lib.check", "synctalk_lib.preprocess",
                           "synctalk_lib.train"]) == []


def test_the_front_door_is_light_until_a_call_is_used():
    loaded = loaded_by("synctalk_lib")
    assert "torch" not in loaded
    assert [m for m in loaded if m.startswith("synctalk_lib.")] == []


def test_the_front_door_gives_the_calls_a_user_needs():
    import synctalk_lib
    from synctalk_lib import (
        Avatar,
        evaluate_person,
        get_config,
        infer,
        person_eval,
        preprocess,
        preprocess_person,
        train,
        train_person,
        voice_report,
        voices,
    )
    from synctalk_lib.config import get_config as config_get_config

    assert preprocess_person is preprocess.preprocess and train_person is train.train_person
    assert Avatar is infer.Avatar and evaluate_person is person_eval.evaluate_person
    assert voice_report is voices.voice_report and get_config is config_get_config
    assert set(synctalk_lib.__all__) <= set(dir(synctalk_lib))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        synctalk_lib.nothing  # noqa: B018
