"""Configuration: frozen dataclasses composed into one `Config`, plus named presets.

Every entry point takes a `Config` (or one of its parts); nothing reads globals or argv.
Presets are diffs from the defaults: `tiny` for tests, `cpu` for the demo on a laptop CPU,
`hd328` for SyncTalk_2D parity. Override any field with dotted keys:
`cfg.override({"crop.smooth_frames": 9})` checks the type and rejects unknown keys.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MediaConfig:
    """Frame rate and encoding of everything the workbench reads and writes."""

    fps: int = 25  # every video is resampled to this; the audio windows assume it
    sample_rate: int = 16_000  # mono; mel constants below assume 16 kHz
    crf: int = 18  # x264 quality of written videos (lower = better, bigger)
    x264_preset: str = "medium"


@dataclass(frozen=True)
class AudioConfig:
    """Mel spectrogram of Wav2Lip / SyncTalk_2D (DESIGN.md §4); 80 mel frames per second."""

    preemphasis: float = 0.97
    n_fft: int = 800
    hop_length: int = 200  # 16 kHz / 200 = 80 mel frames per second
    win_length: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0  # mels are scaled to [-max_abs_value, max_abs_value]
    mel_window: int = 16  # mel frames per video frame (0.2 s), as the lip-sync experts use


@dataclass(frozen=True)
class LandmarkConfig:
    """Face landmark detection."""

    backend: str = "mediapipe"  # "mediapipe" (offline, in the wheel) | "face_alignment"
    min_confidence: float = 0.5
    max_missing_fraction: float = 0.2  # more frames without a face than this is an error
    face_alignment_dir: str = ""  # folder with s3fd/2DFAN4 weights; "" = $TORCH_HOME/hub/checkpoints


@dataclass(frozen=True)
class CropConfig:
    """Lower-face crop geometry (DESIGN.md §2) and its temporal smoothing."""

    size: int = 328  # cached crop side; the model sees the inner size - 2 * ring pixels
    ring: int = 4  # hidden border that absorbs the generator's edge artefacts
    smooth_frames: int = 7  # odd width of the temporal smoothing window for boxes
    # black rectangle over the target crop, as fractions of the inner patch (SyncTalk_2D masks
    # x 5..315, y 5..310 of 320): the generator must invent everything inside it
    mask_x0: float = 5 / 320
    mask_y0: float = 5 / 320
    mask_x1: float = 315 / 320
    mask_y1: float = 310 / 320

    @property
    def inner(self) -> int:
        return self.size - 2 * self.ring


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of the recording check, from the field's recording guidance (DESIGN.md §1)."""

    min_duration_s: float = 60.0  # warn below (about 5 minutes is recommended)
    recommended_duration_s: float = 300.0
    min_face_fraction: float = 0.98  # share of frames with a detected face
    min_face_px: int = 128  # crop side below this gets upscaled to 328: blurry teeth
    max_head_motion: float = 0.25  # nose travel (std, fraction of face width)
    min_mouth_range: float = 0.05  # opening range (fraction of face width) that shows speech
    min_silence_s: float = 1.0  # leading / trailing silence (5 s recommended)
    silence_db: float = -40.0  # frame energy below this (dB re peak) counts as silence
    recommended_silence_s: float = 5.0  # what the field's guidance asks for at start and end
    silence_above_floor_db: float = 6.0  # in a noisy room, floor + this still counts as silence
    silent_dbfs: float = -60.0  # loudest frame below this (dB full scale): the track is mute
    min_fps: float = 24.0  # lower source rates repeat frames at 25 fps: missing mouth shapes
    max_box_outside_fraction: float = 0.01  # crops past the frame edge get repeated edge pixels
    max_scale_change: float = 0.25  # face size p5-p95 change: moving toward/away from camera
    min_snr_db: float = 20.0  # speech over the noise floor; less means noise or music
    voiced_db: float = -30.0  # frames louder than this (dB re peak) count as speech
    closed_mouth: float = 0.02  # opening within this of its p5 (face widths) counts as closed
    min_closed_voiced_s: float = 1.0  # speech under a closed mouth this long is another voice
    max_closed_voiced_fraction: float = 0.05  # share of speech in such stretches before warning


@dataclass(frozen=True)
class Config:
    """The whole configuration; `PRESETS` holds named variants."""

    preset: str = "cpu"
    media: MediaConfig = field(default_factory=MediaConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    check: CheckConfig = field(default_factory=CheckConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild from `to_dict()` output; unknown keys raise (a config from a newer version)."""
        return Config().override(_flatten(data))

    def override(self, changes: dict[str, Any]) -> Config:
        """Return a copy with dotted keys replaced, e.g. {"crop.smooth_frames": 9}."""
        cfg = self
        for key, value in changes.items():
            cfg = _replace_path(cfg, key.split("."), value, key)
        return cfg


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _valid_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += _valid_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _replace_path(obj: Any, parts: list[str], value: Any, full_key: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        valid = ", ".join(_valid_keys(Config()))
        raise KeyError(f"unknown config key {full_key!r}; valid keys: {valid}")
    current = getattr(obj, head)
    if len(parts) > 1:
        if not dataclasses.is_dataclass(current):
            raise KeyError(f"config key {full_key!r}: {head!r} has no sub-fields")
        return dataclasses.replace(obj, **{head: _replace_path(current, parts[1:], value, full_key)})
    if dataclasses.is_dataclass(current):
        raise KeyError(f"config key {full_key!r} names a section; set its fields instead")
    return dataclasses.replace(obj, **{head: _coerce(value, current, full_key)})


def _coerce(value: Any, current: Any, key: str) -> Any:
    """Accept a value of the default's type; ints widen to floats, strings from the CLI parse."""
    kind = type(current)
    if isinstance(value, str) and kind is not str:
        try:
            value = {"true": True, "false": False}[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError) as exc:
            raise TypeError(f"config key {key!r} expects {kind.__name__}, got {value!r}") from exc
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise TypeError(
            f"config key {key!r} expects {kind.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _preset(name: str, **changes: Any) -> Config:
    return Config(preset=name).override(changes)


PRESETS: dict[str, Config] = {
    # CPU demo: the default; preprocessing is the same for every preset (one cache serves all)
    "cpu": _preset("cpu"),
    # unit tests: shortest smoothing so short synthetic clips behave like long ones
    "tiny": _preset("tiny", **{"crop.smooth_frames": 3, "media.x264_preset": "ultrafast"}),
    # SyncTalk_2D parity
    "hd328": _preset("hd328"),
}


def get_config(preset: str = "cpu", overrides: dict[str, Any] | None = None) -> Config:
    """Look up a preset by name and apply overrides; an unknown name lists the known ones."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[preset].override(overrides or {})


__all__ = [
    "PRESETS",
    "AudioConfig",
    "CheckConfig",
    "Config",
    "CropConfig",
    "LandmarkConfig",
    "MediaConfig",
    "get_config",
]
