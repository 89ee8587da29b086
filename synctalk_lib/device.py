"""Device choice: CUDA when present, else CPU; `device=` always overrides."""

from __future__ import annotations

import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on; an unavailable explicit choice is an error, not a silent CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(device)
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available here; "
                           "use device='cpu' or leave it out to choose automatically")
    return chosen
