"""A person's generator checkpoints: their names, which one to use, and loading one.

Training writes `checkpoints/<name>/generator_<step>.pt` (the last `train.keep_last` kept) and
`generator_best.pt` (the best validation loss, when the validation block is long enough to
choose). Inference, evaluation, the server and the notebooks pick theirs with
`resolve_checkpoint` and rebuild the network with `load_generator`, so none of them imports
the training loop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from . import unet
from .checkpoint import CheckpointError, load_checkpoint
from .config import Config
from .device import pick_device

log = logging.getLogger(__name__)

GENERATOR_PREFIX = "generator_"
BEST = "generator_best.pt"
CHOICES = ("best", "latest")  # what `resolve_checkpoint` takes besides a file


def checkpoints_of(out_dir: Path) -> list[Path]:
    """Rolling generator checkpoints, oldest first."""
    return sorted(out_dir.glob(f"{GENERATOR_PREFIX}[0-9]*.pt"))


def trained_people(root: str | Path) -> list[str]:
    """The people under `root` (a checkpoints folder) with at least one generator checkpoint."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and (checkpoints_of(p) or (p / BEST).is_file()))


def resolve_checkpoint(name: str, checkpoints_root: str | Path = "checkpoints",
                       checkpoint: str | Path | None = None) -> Path:
    """The generator checkpoint of person `name` that `checkpoint` names.

    checkpoint: "best" or None (generator_best.pt; the newest when training kept no best,
    its validation block being too short to choose), "latest" (the newest rolling checkpoint;
    generator_best.pt when none is kept), or a file: a path, or a file name in
    `checkpoints_root/name/`. Raises `CheckpointError` saying what is missing and
    what to do.
    """
    folder = Path(checkpoints_root) / name
    choice = "best" if checkpoint is None else str(checkpoint)
    if choice not in CHOICES:
        if Path(choice).is_file():
            return Path(choice)
        candidate = folder / Path(choice).name
        if candidate.is_file():
            return candidate
        raise CheckpointError(f"checkpoint {choice} not found (looked in {folder}); give "
                               f"best, latest or a generator checkpoint file")
    if not folder.is_dir():
        known = trained_people(checkpoints_root)
        raise CheckpointError(f"no trained person {name!r} in {checkpoints_root}; known: "
                               f"{', '.join(known) or 'none'}. Train it first (notebooks/02_train)")
    saved = checkpoints_of(folder)
    best = folder / BEST
    if choice == "latest" and saved:
        return saved[-1]
    if best.is_file():
        return best
    if not saved:
        raise CheckpointError(f"{folder} holds no generator checkpoint; train {name!r} first "
                               f"(`python -m synctalk_lib train --name {name}`)")
    if checkpoint is not None:  # asked for best by name: say what it gets instead
        log.warning("%s has no %s (training kept none: too short a validation block); using the "
                 "newest, %s", folder, BEST, saved[-1].name)
    return saved[-1]


def must_match(cfg: Config) -> dict[str, Any]:
    """Settings a checkpoint must share with the run that resumes or loads it (the audio
    input's size only when `cfg` knows it: a preset leaves it to the checkpoint)."""
    must = {"model.audio_mode": cfg.model.audio_mode, "model.channels": cfg.model.channels,
            "model.image_size": cfg.model.image_size}
    if cfg.model.audio_dim:
        must["model.audio_dim"] = cfg.model.audio_dim
    return must


def load_generator(path: str | Path, cfg: Config | None = None,
                   device: str | None = None) -> tuple[torch.nn.Module, Config]:
    """Rebuild a generator from its checkpoint; `cfg` (if given) must match its model."""
    expect = must_match(cfg) if cfg is not None else None
    state = load_checkpoint(path, kind="generator", expect=expect)
    saved: Config = state["config"]
    model = unet.Generator.from_config(saved.model)
    model.load_state_dict(state["model"])
    return model.to(pick_device(device)).eval(), saved
