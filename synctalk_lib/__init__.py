"""SyncTalk Workbench: audio-driven lip-sync video of one person.

The calls a user needs, from the recording to the scores (the notebooks and
`python -m synctalk_lib` run the same ones):

    from synctalk_lib import (Avatar, evaluate_person, get_config, preprocess_person,
                              train_person, voice_report)

    cfg = get_config("cpu", {"train.minutes": 20.0})   # a preset plus overrides (config.py)
    preprocess_person("May", cfg=cfg)                   # dataset/May/May.mp4 -> dataset/May/
    train_person("May", cfg)                            # -> checkpoints/May/
    avatar = Avatar.load("May")                         # generator_best.pt, else the newest
    print(avatar.render("speech.wav").path)             # outputs/May/speech.mp4
    print(evaluate_person("May").summary())             # the held-out tail, real vs generated
    voice_report(avatar)                                # how other voices drive May

They are imported on first use, so `import synctalk_lib` stays light (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute); `preprocess_person` is `preprocess.preprocess`, renamed here
# because `synctalk_lib.preprocess` is the module
_EXPORTS = {
    "get_config": ("config", "get_config"),
    "preprocess_person": ("preprocess", "preprocess"),
    "train_person": ("train", "train_person"),
    "Avatar": ("infer", "Avatar"),
    "evaluate_person": ("person_eval", "evaluate_person"),
    "voice_report": ("voices", "voice_report"),
}
__all__ = ["Avatar", "__version__", "evaluate_person", "get_config", "preprocess_person",
           "train_person", "voice_report"]  # = _EXPORTS and the version

if TYPE_CHECKING:
    from .config import get_config
    from .infer import Avatar
    from .person_eval import evaluate_person
    from .preprocess import preprocess as preprocess_person
    from .train import train_person
    from .voices import voice_report


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
