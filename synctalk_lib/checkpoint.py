"""Checkpoints: weights plus everything needed to rebuild and resume, written atomically.

A checkpoint is one `torch.save` file holding the model state, the full `Config` it was built
with, what kind of network it is, the step, optionally the optimizer, and the RNG states, so a
resumed run continues exactly where the interrupted one stopped. Loading checks the kind and
the audio mode / preset against what the caller needs and says how to fix a mismatch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .files import atomic_path

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or made for other settings."""


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states (CUDA too when present)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike,
    *,
    kind: str,
    model: torch.nn.Module,
    cfg: Config,
    step: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict[str, Any] | None = None,
    with_rng: bool = True,
    aux: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file.

    kind: "generator" | "syncnet" | …, checked on load. extra: JSON-like metrics/history.
    aux: states only a resumed run needs (the generator's discriminator), under "aux".
    """
    module = model.module if hasattr(model, "module") else model  # unwrap DDP
    payload = {
        "format": FORMAT_VERSION, "kind": kind, "step": step, "config": cfg.to_dict(),
        "model": module.state_dict(), "extra": extra or {},
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if with_rng:
        payload["rng"] = rng_state()
    if aux:
        payload["aux"] = aux
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike,
    kind: str | None = None,
    expect: dict[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint and check it is what the caller needs.

    kind: required network kind. expect: dotted config keys that must match, e.g.
    {"model.audio_mode": "ave"}; a mismatch names both values and the fix.
    Returns the payload with "config" rebuilt as a `Config`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first (notebooks/02_train.ipynb "
                              "or `python -m synctalk_lib train`)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many types for damaged files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a SyncTalk Workbench checkpoint (format "
                              f"{FORMAT_VERSION}); SyncTalk_2D weights need the converter")
    if kind is not None and payload["kind"] != kind:
        raise CheckpointError(f"{path} holds a {payload['kind']}, expected a {kind}")
    cfg = Config.from_dict(payload["config"])
    flat = cfg.flat()
    for key, wanted in (expect or {}).items():
        if flat.get(key) != wanted:
            raise CheckpointError(
                f"{path} was trained with {key}={flat.get(key)!r} (preset "
                f"{cfg.preset!r}) but {wanted!r} was asked for; use the matching "
                f"setting or train a new checkpoint"
            )
    payload["config"] = cfg
    return payload
