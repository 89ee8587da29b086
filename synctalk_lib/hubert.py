"""HuBERT speech features for the generator's `hubert` audio mode (docs/design.md §3-§4).

SyncTalk_2D feeds the generator `facebook/hubert-large-ls960-ft` (hidden size 1024, 50
frames per second) and gives each 25 fps video frame two HuBERT frames: 2 × 1024 = 2048
values. Nothing here downloads: the weights come from a local folder (`resolve_dir`), and a
missing or incomplete folder is an error that says what to put there.

HuBERT attends over the whole input, so its cost grows with the square of the length. Long
audio is cut into chunks on the model's frame grid, each run with `context_s` of audio on
both sides whose frames are thrown away; the kept frames then differ from one whole-audio
pass only by what the model would have seen further away. The input is normalised to zero
mean and unit variance over the whole audio (as the feature extractor of the `-ft` model
does, and as SyncTalk_2D does before it cuts its clips), so every chunk sees the same scale.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from . import files
from .audio import n_video_frames
from .config import MediaConfig
from .device import pick_device

ENV_DIR = "SYNCTALK_HUBERT_DIR"
DEFAULT_FOLDER = "hubert-large-ls960-ft"  # under the checkpoints root
HIDDEN_SIZE = 1024  # what the generator's hubert input (32, 32, 32) is built for
FRAMES_PER_VIDEO_FRAME = 2
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
_GET_IT = ("on a machine with internet: `huggingface-cli download facebook/hubert-large-ls960-ft "
           "--local-dir {dir}` (or `hf download …`), then copy the folder here")


class HubertError(RuntimeError):
    """HuBERT cannot be used: transformers missing, weights folder missing or unsuitable."""


def resolve_dir(configured: str = "", checkpoints_root: str | Path = "checkpoints") -> Path:
    """Where the HuBERT weights are: `model.hubert_dir` if set, else $SYNCTALK_HUBERT_DIR,
    else <checkpoints_root>/hubert-large-ls960-ft."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    return Path(checkpoints_root) / DEFAULT_FOLDER


def check_dir(path: str | Path) -> Path:
    """The folder if it holds config.json and a weights file; else a HubertError saying how
    to fill it."""
    path = Path(path)
    need = f"config.json and one of {', '.join(WEIGHT_FILES[:2])}"
    if not path.is_dir():
        raise HubertError(f"audio_mode 'hubert' needs HuBERT weights in {path}, which does not "
                          f"exist; it must hold {need}. Get them {_GET_IT.format(dir=path)}, "
                          f"or point model.hubert_dir (or ${ENV_DIR}) at your copy")
    missing = [] if (path / "config.json").is_file() else ["config.json"]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES[:2]))
    if missing:
        raise HubertError(f"HuBERT folder {path} is incomplete: {' and '.join(missing)} "
                          f"missing (it must hold {need}); get it {_GET_IT.format(dir=path)}")
    return path


def source_digest(path: str | Path) -> str:
    """Digest of the folder's config and weights: cached features are keyed on it."""
    path = check_dir(path)
    parts = {f: files.file_digest(path / f) for f in ("config.json", *WEIGHT_FILES)
             if (path / f).is_file()}
    return files.digest_of(parts)


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise HubertError("audio_mode 'hubert' needs the transformers package: pip install "
                          "-e '.[hubert]' (or pip install transformers)") from exc
    return transformers


def _wants_normalised(path: Path, config) -> bool:
    """The feature extractor's `do_normalize`; without its file, what transformers advises:
    normalise for models whose conv feature extractor uses layer norm (the large ones)."""
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        settings = json.loads(pre.read_text())
        rate = settings.get("sampling_rate", 16_000)
        if rate != 16_000:
            raise HubertError(f"{pre} says the model expects {rate} Hz audio; the workbench "
                              "feeds HuBERT 16 kHz")
        return bool(settings.get("do_normalize", True))
    return config.feat_extract_norm == "layer"


def _check_hidden_size(size: int, where: str) -> None:
    if size != HIDDEN_SIZE:
        raise HubertError(f"the HuBERT in {where} has hidden size {size}, but the generator's "
                          f"hubert input needs {HIDDEN_SIZE} (hubert-large, e.g. "
                          "facebook/hubert-large-ls960-ft); hubert-base (768) does not fit")


def _receptive_field(kernels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    field, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        field += (k - 1) * jump
        jump *= s
    return field


class HubertFeatures:
    """A local HuBERT model as a function: (S,) 16 kHz mono float → (T_video, 2048) float32.

    chunk_s: audio per model call (bounds memory and time: attention is quadratic);
    context_s: extra audio each side of a chunk that the model sees but whose frames are
    dropped. SyncTalk_2D cuts 20 s clips without any overlap.
    """

    def __init__(self, model: torch.nn.Module, normalise: bool, media: MediaConfig | None = None,
                 device: str | torch.device | None = None, chunk_s: float = 20.0,
                 context_s: float = 2.0) -> None:
        cfg = model.config
        _check_hidden_size(cfg.hidden_size, "this model")
        self.media = media or MediaConfig()
        self.stride = math.prod(cfg.conv_stride)  # samples per HuBERT frame (320 = 50 Hz)
        self.receptive = _receptive_field(tuple(cfg.conv_kernel), tuple(cfg.conv_stride))
        per_video = self.media.sample_rate / self.media.fps
        if per_video != FRAMES_PER_VIDEO_FRAME * self.stride:
            raise HubertError(f"HuBERT makes a frame every {self.stride} samples, but the "
                              f"workbench needs {FRAMES_PER_VIDEO_FRAME} per video frame "
                              f"({per_video:g} samples at {self.media.sample_rate} Hz, "
                              f"{self.media.fps} fps)")
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.normalise = normalise
        frames_per_s = self.media.sample_rate / self.stride
        self.chunk_frames = max(1, round(chunk_s * frames_per_s))
        self.context_frames = max(0, round(context_s * frames_per_s))

    @classmethod
    def load(cls, path: str | Path, media: MediaConfig | None = None,
             device: str | torch.device | None = None, **kw) -> HubertFeatures:
        """Load from a local folder only (config.json + weights); never downloads."""
        path = check_dir(path)
        tf = _transformers()
        config = tf.HubertConfig.from_pretrained(path, local_files_only=True)
        if config.model_type != "hubert":
            raise HubertError(f"{path} holds a {config.model_type!r} model, not HuBERT")
        _check_hidden_size(config.hidden_size, str(path))  # before reading the weights
        model = tf.HubertModel.from_pretrained(path, local_files_only=True, config=config)
        return cls(model.float(), _wants_normalised(path, config), media, device, **kw)

    @property
    def dim(self) -> int:
        return FRAMES_PER_VIDEO_FRAME * HIDDEN_SIZE

    def prepare(self, wav: np.ndarray, n_frames: int | None = None) -> tuple[np.ndarray, int]:
        """Normalised audio padded (zeros = its mean) or trimmed to exactly 2 HuBERT frames
        per video frame, and the number of video frames."""
        wav = np.asarray(wav)
        if wav.ndim != 1:
            raise ValueError(f"expected mono audio (S,), got shape {wav.shape}")
        n_video = n_video_frames(len(wav), self.media) if n_frames is None else n_frames
        x = wav.astype(np.float64)
        if self.normalise and len(x):
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        need = (FRAMES_PER_VIDEO_FRAME * n_video - 1) * self.stride + self.receptive
        out = np.zeros(max(need, 0), np.float32)
        out[: min(need, len(x))] = x[:need]
        return out, n_video

    @torch.inference_mode()
    def _run(self, x: np.ndarray) -> np.ndarray:
        inp = torch.from_numpy(x)[None].to(self.device)
        return self.model(inp).last_hidden_state[0].float().cpu().numpy()

    def __call__(self, wav: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """(S,) float mono audio at the media sample rate → (T_video, 2048) float32, where
        T_video = n_frames or audio.n_video_frames(S); video frame t gets HuBERT frames 2t and
        2t + 1 (audio that ends early counts as silence, audio past the end is cut)."""
        x, n_video = self.prepare(wav, n_frames)
        total = FRAMES_PER_VIDEO_FRAME * n_video
        out = np.empty((total, HIDDEN_SIZE), np.float32)
        for f0 in range(0, total, self.chunk_frames):
            f1 = min(total, f0 + self.chunk_frames)
            a, b = max(0, f0 - self.context_frames), min(total, f1 + self.context_frames)
            hidden = self._run(x[a * self.stride: (b - 1) * self.stride + self.receptive])
            out[f0:f1] = hidden[f0 - a: f1 - a]
        return out.reshape(n_video, self.dim)

    def silence(self, seconds: float = 1.0) -> np.ndarray:
        """(2048,) features of digital silence (a zero waveform, middle frame)."""
        feats = self(np.zeros(round(seconds * self.media.sample_rate), np.float32))
        return feats[len(feats) // 2]
