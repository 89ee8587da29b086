"""SyncNet: a lip-sync expert trained on the person's own video (docs/design.md §4, §5, §7).

A face encoder sees `n_frames` (5) consecutive lower-face patches stacked as 15 channels; an
audio encoder sees the mel window of the first of those frames (80 mels x 16 frames = 0.2 s,
the same span). Both end in a ReLU, so after L2 normalisation their cosine lies in [0, 1] and
is read as the probability that face and audio are in sync (Wav2Lip's "colour" SyncNet).

What this does that SyncTalk_2D's `syncnet_328.py` does not: it trains on off-sync negatives
(audio shifted by >= `min_shift` frames, or taken from elsewhere in the clip) balanced 50/50
with positives, zeroes gradients every step, keeps the best checkpoint by held-out accuracy
(a contiguous block of frames never trained on), and resumes exactly.

The trained audio encoder is the `ave` feature extractor of the generator (`audio_features`).
Its module structure is that of SyncTalk_2D's `AudioEncoder` (keys `audio_encoder.N.conv_block.
{0,1}.*`, 2.8 M parameters), so `load_ave_weights` also accepts SyncTalk_2D's
`audio_visual_encoder.pth` when a user has it.

References: Prajwal et al., "A Lip Sync Expert Is All You Need" (Wav2Lip, 2020); Chung and
Zisserman, "Out of time: automated lip sync in the wild" (SyncNet, 2016) for the offset search.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, data
from .config import Config, SyncNetConfig
from .device import pick_device, reuse_freed_memory
from .progress import progress_bar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .dataset import PreparedDataset

log = logging.getLogger(__name__)

EMBED_DIM = 512  # fixed by audio_visual_encoder.pth and the generator's `ave` input (16 x 512)
N_MELS, MEL_WINDOW = 80, 16  # the audio encoder's input: 0.2 s of the Wav2Lip mel spectrogram
CKPT_KIND = "syncnet"
BEST_NAME, LAST_NAME = "syncnet.pt", "syncnet_last.pt"
P_EPS = 1e-6  # cosine is clamped to [P_EPS, 1 - P_EPS] before the log of BCE
LOUD_PERCENTILES = (5, 95)  # mel loudness floor and speech level of a recording


# ------------------------------------------------------------------------------- networks


class ConvBlock(nn.Module):
    """Conv + BatchNorm (+ input) + ReLU. Attribute names follow SyncTalk_2D / Wav2Lip's
    `Conv2d`, so their state dicts load unchanged."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int = 1, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class AudioEncoder(nn.Module):
    """Mel window → 512-d audio embedding (the `ave` feature); SyncTalk_2D's layout by default.

    Frequency 80 shrinks by strides 3, 3, 3 and a last 3x3 valid conv (80 → 27 → 9 → 3 → 1),
    time 16 by strides 1, 3, 2 and the same conv (16 → 16 → 6 → 3 → 1).
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128, 256)):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"audio_channels needs 4 widths (SyncTalk_2D: 32, 64, 128, 256), "
                             f"got {channels}")
        c0, c1, c2, c3 = channels
        self.audio_encoder = nn.Sequential(
            ConvBlock(1, c0, 3, 1, 1),
            ConvBlock(c0, c0, 3, 1, 1, residual=True),
            ConvBlock(c0, c0, 3, 1, 1, residual=True),
            ConvBlock(c0, c1, 3, (3, 1), 1),
            ConvBlock(c1, c1, 3, 1, 1, residual=True),
            ConvBlock(c1, c1, 3, 1, 1, residual=True),
            ConvBlock(c1, c2, 3, 3, 1),
            ConvBlock(c2, c2, 3, 1, 1, residual=True),
            ConvBlock(c2, c2, 3, 1, 1, residual=True),
            ConvBlock(c2, c3, 3, (3, 2), 1),
            ConvBlock(c3, c3, 3, 1, 1, residual=True),  # SyncTalk_2D keeps one block here
            ConvBlock(c3, EMBED_DIM, 3, 1, 0),
            ConvBlock(EMBED_DIM, EMBED_DIM, 1, 1, 0),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (B, 1, 80, 16) float32 in [-4, 4]. Returns (B, 512) float32 >= 0, unnormalised."""
        return self.audio_encoder(mel).flatten(1)  # (B, 512, 1, 1) -> (B, 512)


class SpeechAudioEncoder(nn.Module):
    """Speech features of n_frames video frames (Whisper's, `audio_input="speech"`) → 512-d.

    A 1×1 projection to `width`, two 3-tap temporal convolutions with a residual, and a
    valid convolution over the whole window: the embedding keeps where in the 0.2 s each sound
    falls, as the mel encoder's final valid convolution does.
    """

    def __init__(self, dim: int, n_frames: int = 5, width: int = 256):
        super().__init__()
        if dim <= 0:
            raise ValueError("a speech-feature SyncNet needs the features' size (model.audio_dim)")

        def block(cin: int, cout: int, k: int, pad: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, k, padding=pad), nn.BatchNorm1d(cout))

        self.project = block(dim, width, 1, 0)
        self.mix1, self.mix2 = block(width, width, 3, 1), block(width, width, 3, 1)
        self.window = block(width, EMBED_DIM, n_frames, 0)
        self.out = nn.Conv1d(EMBED_DIM, EMBED_DIM, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: (B, n_frames, dim) float32. Returns (B, 512) >= 0, unnormalised."""
        x = F.relu(self.project(feats.transpose(1, 2)))
        x = F.relu(x + self.mix2(F.relu(self.mix1(x))))
        return F.relu(self.out(F.relu(self.window(x)))).flatten(1)


def _down(n: int) -> int:
    return (n + 1) // 2  # side after a stride-2 conv with "same" padding


class FaceEncoder(nn.Module):
    """Stacked face frames → 512-d face embedding.

    A stride-2 7x7 stem, then per width a stride-2 conv and `res_blocks` residual convs; a
    valid conv as large as the remaining map (so the mouth's position still counts) and a 1x1
    conv make the 512-d vector, as in Wav2Lip's face encoder.
    """

    def __init__(self, image_size: int, n_frames: int = 5,
                 channels: tuple[int, ...] = (32, 64, 128, 256), res_blocks: int = 1):
        super().__init__()
        layers: list[nn.Module] = [ConvBlock(3 * n_frames, channels[0], 7, 2, 3)]
        side = _down(image_size)
        layers += [ConvBlock(channels[0], channels[0], 3, 1, 1, residual=True)
                   for _ in range(res_blocks)]
        for cin, cout in itertools.pairwise(channels):
            layers.append(ConvBlock(cin, cout, 3, 2, 1))
            side = _down(side)
            layers += [ConvBlock(cout, cout, 3, 1, 1, residual=True) for _ in range(res_blocks)]
        layers += [ConvBlock(channels[-1], EMBED_DIM, side, 1, 0),
                   ConvBlock(EMBED_DIM, EMBED_DIM, 1, 1, 0)]
        self.face_encoder = nn.Sequential(*layers)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """faces: (B, 3T, S, S) float32 in [0, 1], RGB, frame-major. Returns (B, 512) >= 0."""
        return self.face_encoder(faces).flatten(1)  # (B, 512, 1, 1) -> (B, 512)


class SyncNet(nn.Module):
    """Face window + audio window → unit-length non-negative embeddings; cosine = P(in sync).

    The audio window is 0.2 s of mel spectrogram (`audio_input="mel"`), or the speech features
    of the same frames (`"speech"`, `audio_dim` values a frame)."""

    def __init__(self, cfg: SyncNetConfig, audio_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        self.face_encoder = FaceEncoder(cfg.image_size, cfg.n_frames, cfg.face_channels,
                                        cfg.face_res_blocks)
        if cfg.audio_input not in ("mel", "speech"):
            raise ValueError(f"unknown syncnet.audio_input {cfg.audio_input!r}; use 'mel' or "
                             "'speech'")
        self.speech = cfg.audio_input == "speech"
        self.source_config: Config | None = None  # the checkpoint's whole config, once loaded
        self.audio_encoder = (SpeechAudioEncoder(audio_dim, cfg.n_frames) if self.speech
                              else AudioEncoder(cfg.audio_channels))

    @classmethod
    def from_config(cls, cfg: Config | SyncNetConfig) -> SyncNet:
        if isinstance(cfg, Config):
            return cls(cfg.syncnet, cfg.model.audio_dim)
        return cls(cfg)

    def forward(self, faces: torch.Tensor, mels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """faces: (B, 3T, S, S) float32 in [0, 1] RGB; mels: (B, 1, 80, 16) float32 in [-4, 4]
        (or, for a speech SyncNet, (B, T, audio_dim) features: `audio_windows`).

        Returns (face_emb, audio_emb), each (B, 512) float32, L2-normalised, entries >= 0.
        """
        face = F.normalize(self.face_encoder(faces), dim=1)  # (B, 512)
        audio = F.normalize(self.audio_encoder(mels), dim=1)  # (B, 512)
        return face, audio

    def sync_probability(self, faces: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        """(B,) float32 in [0, 1]: cosine of the two embeddings; > 0.5 reads as in sync."""
        face, audio = self(faces, mels)
        return (face * audio).sum(1)


# ------------------------------------------------------------------ SyncTalk_2D's AVE weights


class AveWeightsError(RuntimeError):
    """A file is not an audio encoder state dict of the expected layout."""


_ANCHOR = "0.conv_block.0.weight"  # first key of the layout, to find a file's key prefix


def load_ave_weights(encoder: AudioEncoder, path: str | os.PathLike) -> AudioEncoder:
    """Load SyncTalk_2D's `audio_visual_encoder.pth` (or any state dict of this layout).

    The reference file stores keys without prefix (`0.conv_block.0.weight`, …); files saved
    from a wrapping module (`audio_encoder.`, `module.`, a SyncNet checkpoint of ours) are
    matched by finding the prefix before `0.conv_block.0.weight`. Nothing is downloaded: a
    missing file or a mismatched layout raises `AveWeightsError` naming what differs.
    Returns the encoder (weights loaded in place, left in eval mode).
    """
    path = Path(path)
    if not path.is_file():
        raise AveWeightsError(
            f"no audio encoder weights at {path}; copy SyncTalk_2D's "
            "model/checkpoints/audio_visual_encoder.pth there, or train one with train_syncnet")
    # tensors only (plus the numpy arrays of our checkpoints' RNG state): a downloaded .pth
    # cannot run code while loading
    safe = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]
    try:
        with torch.serialization.safe_globals(safe):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise AveWeightsError(
            f"cannot read {path} as a state dict of tensors ({type(exc).__name__}): damaged, "
            "not a PyTorch file, or it holds other Python objects") from exc
    for key in ("model", "state_dict"):  # our checkpoints and common training wrappers
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor)
                                               for v in loaded.values()):
        raise AveWeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict of "
                              "tensors (expected keys like '0.conv_block.0.weight')")
    target = {k.removeprefix("audio_encoder."): v
              for k, v in encoder.state_dict().items()}  # reference layout: no prefix
    required = [k for k in target if not k.endswith("num_batches_tracked")]
    prefixes = [k[: -len(_ANCHOR)] for k in loaded if k.endswith(_ANCHOR)]
    best, best_missing = "", required
    for prefix in prefixes:
        missing = [k for k in required if prefix + k not in loaded]
        if len(missing) < len(best_missing):
            best, best_missing = prefix, missing
    if best_missing:
        sample = ", ".join(list(loaded)[:4])
        raise AveWeightsError(
            f"{path} is not an audio encoder of SyncTalk_2D's layout: {len(best_missing)} of "
            f"{len(required)} tensors missing (e.g. {best_missing[:3]}); the file has "
            f"{len(loaded)} keys such as {sample}")
    wrong = [f"{k}: file {tuple(loaded[best + k].shape)}, model {tuple(target[k].shape)}"
             for k in required if loaded[best + k].shape != target[k].shape]
    if wrong:
        raise AveWeightsError(
            f"{path} has the key layout but other sizes ({len(wrong)} tensors, e.g. {wrong[0]});"
            " SyncTalk_2D's weights need syncnet.audio_channels = (32, 64, 128, 256)")
    state = {f"audio_encoder.{k}": loaded.get(best + k, target[k]) for k in target}
    encoder.load_state_dict(state)
    return encoder.eval()


# ----------------------------------------------------------------------------------- data


def audio_windows(cfg: SyncNetConfig, mel_windows: np.ndarray,
                  features: np.ndarray | None = None) -> np.ndarray:
    """What SyncNet's audio tower hears for each frame t's face window (frames t..t+T-1):
    mel: (N, 1, 80, 16), the mel window from t (a view); speech: (N, T, F), the features of
    frames t..t+T-1 (the last frame repeated past the end)."""
    if cfg.audio_input != "speech":
        return np.asarray(mel_windows)[:, None]
    if features is None:
        raise ValueError("a speech-feature SyncNet (syncnet.audio_input='speech') needs the "
                         "generator's speech features")
    idx = np.minimum(np.arange(len(features))[:, None] + np.arange(cfg.n_frames)[None],
                     len(features) - 1)
    return np.asarray(features, np.float32)[idx]


def dataset_faces(ds: PreparedDataset, cfg: SyncNetConfig, start: int = 0,
                  stop: int | None = None) -> np.ndarray:
    """Inner crop patches of frames [start, stop) resized for SyncNet: (N, S, S, 3) uint8 RGB."""
    return data.model_patches(ds, cfg.image_size, start, stop)


def window_loudness(mel_windows: np.ndarray) -> np.ndarray:
    """(T, 80, 16) mel windows → (T,) mean level in the mel scale [-4, 4]."""
    return np.asarray(mel_windows, np.float32).mean(axis=(1, 2))


def loud_windows(mel_windows: np.ndarray, silence_fraction: float) -> np.ndarray:
    """(T,) bool: the window is louder than floor + silence_fraction * (speech - floor).

    Floor and speech level are percentiles of the recording's own window loudness, so the
    rule holds for a studio (floor at -4) and a noisy room alike.
    """
    level = window_loudness(mel_windows)
    floor, speech = np.percentile(level, LOUD_PERCENTILES)
    if speech - floor < 0.1:  # one level throughout: nothing to tell apart
        return np.ones(len(level), bool)
    return level > floor + silence_fraction * (speech - floor)


class SyncPairs(torch.utils.data.Dataset):
    """Face windows paired with aligned (label 1) or off-sync (label 0) audio windows.

    Over frames [start, stop) of a prepared dataset: a window starts at frame i when frames
    i .. i+T-1 lie inside the range. Item 2k is window k with its own mel window (positive);
    item 2k+1 is the same faces with audio of another start j in the range (negative): a shift
    of min_shift..max_shift frames either way, or with probability `far_negative_share` any
    farther start. Pairs where both audio windows are silent are never negatives (a closed
    mouth in silence is in sync with any silence). Every choice stays inside the range, so a
    validation block shares no frame with training.

    Items: faces (3T, S, S) float32 in [0, 1] RGB (frame-major), mel (1, 80, 16) float32,
    label () float32 1. or 0.
    """

    def __init__(self, ds: PreparedDataset, start: int, stop: int, cfg: SyncNetConfig,
                 augment: bool = False, seed: int = 0, faces: np.ndarray | None = None,
                 loud: np.ndarray | None = None, audio: np.ndarray | None = None):
        self.cfg, self.augment, self.seed = cfg, augment, seed
        self.start, self.stop = start, stop
        n_starts = stop - start - cfg.n_frames + 1
        if n_starts < 2 * cfg.min_shift + 1:
            raise ValueError(f"frames {start}..{stop} hold {max(n_starts, 0)} windows of "
                             f"{cfg.n_frames} frames; need at least {2 * cfg.min_shift + 1} "
                             "for off-sync pairs: use a longer video, or change "
                             "syncnet.val_fraction / train.heldout_fraction")
        if not 1 <= cfg.min_shift <= cfg.max_shift:
            raise ValueError(f"need 1 <= syncnet.min_shift <= syncnet.max_shift, got "
                             f"{cfg.min_shift}, {cfg.max_shift}")
        self.n_starts = n_starts
        mels = ds.mel_windows()
        windows = audio_windows(cfg, mels) if audio is None else audio
        self.mels = np.array(windows[start: start + n_starts], np.float32)
        self.faces = dataset_faces(ds, cfg, start, stop) if faces is None else faces
        if len(self.faces) != stop - start:
            raise ValueError(f"faces cover {len(self.faces)} frames, range has {stop - start}")
        if loud is None:
            loud = loud_windows(mels, cfg.silence_fraction)
        self.loud = np.asarray(loud[start: start + n_starts], bool)

    def __len__(self) -> int:
        return 2 * self.n_starts

    def pair(self, idx: int, rng: np.random.Generator) -> tuple[int, int, float]:
        """(face start frame, audio frame, label) of item `idx`, frames absolute."""
        k, negative = divmod(idx, 2)
        if not negative:
            return self.start + k, self.start + k, 1.0
        return self.start + k, self.start + self._negative(k, rng), 0.0

    def _negative(self, k: int, rng: np.random.Generator) -> int:
        cfg, n = self.cfg, self.n_starts
        offsets = np.arange(-k, n - k)  # every other start, relative to k
        dist = np.abs(offsets)
        usable = dist >= cfg.min_shift
        if not self.loud[k]:
            usable &= self.loud[k + offsets]
        near = offsets[usable & (dist <= cfg.max_shift)]
        far = offsets[usable & (dist > cfg.max_shift)]
        if len(far) and (not len(near) or rng.random() < cfg.far_negative_share):
            return k + int(rng.choice(far))
        if len(near):
            return k + int(rng.choice(near))
        # silent window with no speech in reach: any far-enough audio is still a negative
        fallback = offsets[dist >= cfg.min_shift]
        return k + int(rng.choice(fallback))

    def item(self, idx: int, rng: np.random.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        face_frame, audio_frame, label = self.pair(idx, rng)
        k, j = face_frame - self.start, audio_frame - self.start
        frames = self.faces[k: k + self.cfg.n_frames].astype(np.float32) / 255.0  # (T, S, S, 3)
        if self.augment:
            frames = self._jitter(frames, rng)
        faces = torch.from_numpy(np.ascontiguousarray(
            frames.transpose(0, 3, 1, 2).reshape(-1, *frames.shape[1:3])))  # (3T, S, S)
        mel = torch.from_numpy(self.mels[j])  # (1, 80, 16) or (T, audio_dim)
        return faces, mel, torch.tensor(label)

    def _jitter(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Same brightness/contrast change on all T frames: colour varies, geometry does not."""
        cfg = self.cfg
        gain = 1.0 + rng.uniform(-cfg.contrast_jitter, cfg.contrast_jitter)
        shift = rng.uniform(-cfg.brightness_jitter, cfg.brightness_jitter)
        mean = frames.mean()
        return np.clip((frames - mean) * gain + mean + shift, 0.0, 1.0, dtype=np.float32)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        return self.item(idx, np.random.default_rng((self.seed, idx)))

    def batch(self, indices: np.ndarray, rng: np.random.Generator
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.item(int(i), rng) for i in indices]
        return tuple(torch.stack(t) for t in zip(*items))  # type: ignore[return-value]


# ------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class Split:
    """Frame ranges [start, stop) of training and validation; frames past `val[1]` unused."""

    train: tuple[int, int]
    val: tuple[int, int]


def split_frames(n_frames: int, cfg: Config) -> Split:
    """Training block, then a contiguous validation block, then the held-out tail.

    The same split as the generator's (`data.split_frames`): the tail is
    `train.heldout_fraction` of the video, never trained on; validation is the
    `syncnet.val_fraction` block right before it.
    """
    parts = data.split_frames(n_frames, cfg.train.heldout_fraction, cfg.syncnet.val_fraction)
    if len(parts.val) == 0:
        raise ValueError(f"syncnet.val_fraction={cfg.syncnet.val_fraction} leaves no validation "
                         f"frames among {n_frames}; raise it or use a longer video")
    return Split(train=(0, len(parts.train)), val=(int(parts.val[0]), int(parts.val[-1]) + 1))


def sync_loss(face: torch.Tensor, audio: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Balanced BCE on the cosine: in-sync and off-sync pairs weigh half each."""
    p = (face * audio).sum(1).clamp(P_EPS, 1 - P_EPS)
    bce = F.binary_cross_entropy(p, label, reduction="none")
    pos = label > 0.5
    parts = [bce[m].mean() for m in (pos, ~pos) if m.any()]
    return torch.stack(parts).mean()


@dataclass
class SyncNetResult:
    """What `train_syncnet` made: the best model (by held-out accuracy) and the record."""

    path: Path  # out_dir/syncnet.pt, the best checkpoint
    model: SyncNet  # loaded from it, eval mode
    history: list[dict[str, float]]  # one row per evaluation: step, losses, accuracy, time
    val_accuracy: float  # best held-out accuracy (threshold 0.5, balanced pairs)
    best_step: int
    step: int  # steps trained in total (including resumed ones)
    split: Split
    seconds: float  # wall time of this call


def _val_batches(pairs: SyncPairs, n_pairs: int, batch: int
                 ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed validation items: evenly spread windows, each with its positive and negative."""
    n_windows = min(pairs.n_starts, max(1, n_pairs // 2))
    windows = np.linspace(0, pairs.n_starts - 1, n_windows).round().astype(int)
    idx = np.stack([2 * windows, 2 * windows + 1], 1).ravel()
    items = [pairs[int(i)] for i in idx]
    out = []
    for s in range(0, len(items), batch):
        out.append(tuple(torch.stack(t) for t in zip(*items[s: s + batch])))
    return out  # type: ignore[return-value]


@torch.no_grad()
def validation_scores(model: SyncNet, batches: list, device: torch.device
                      ) -> tuple[float, float]:
    """(balanced BCE loss, accuracy at 0.5) over fixed batches; model in eval mode."""
    was_training = model.training
    model.eval()
    probs, labels = [], []
    for faces, mels, label in batches:
        face, audio = model(faces.to(device), mels.to(device))
        probs.append((face * audio).sum(1).cpu())
        labels.append(label)
    model.train(was_training)
    p, y = torch.cat(probs), torch.cat(labels)
    pc = p.clamp(P_EPS, 1 - P_EPS)
    bce = F.binary_cross_entropy(pc, y, reduction="none")
    loss = 0.5 * (bce[y > 0.5].mean() + bce[y < 0.5].mean())
    accuracy = ((p > 0.5).float() == y).float().mean()
    return loss.item(), accuracy.item()


@reuse_freed_memory()
def train_syncnet(
    ds: PreparedDataset,
    cfg: Config,
    out_dir: str | os.PathLike,
    steps: int | None = None,
    device: str | None = None,
    progress: bool = True,
    resume: bool = True,
    features: np.ndarray | None = None,
) -> SyncNetResult:
    """Train SyncNet on a prepared dataset; best checkpoint at `out_dir/syncnet.pt`.

    features: (T, F) the generator's speech features, for `syncnet.audio_input="speech"`.

    steps: total optimizer steps (default `cfg.syncnet.steps`); with `resume`, a run stopped
    earlier in `out_dir` (`syncnet_last.pt`) continues from its step with the same result as
    an uninterrupted run. device: "cpu", "cuda", …; default cuda when available.
    Every `eval_every` steps the held-out block is scored; the checkpoint with the best
    accuracy is kept as `syncnet.pt` (extra: history, val_accuracy, split).
    """
    started = time.perf_counter()
    scfg = cfg.syncnet
    total = scfg.steps if steps is None else steps
    dev = pick_device(device)
    out_dir = Path(out_dir)
    split = split_frames(ds.n_frames, cfg)
    loud = loud_windows(ds.mel_windows(), scfg.silence_fraction)
    log.info("syncnet: train frames %d-%d, validation %d-%d of %d; %.0f%% of windows loud",
             *split.train, *split.val, ds.n_frames, 100 * loud.mean())
    windows = audio_windows(scfg, ds.mel_windows(), features)
    train = SyncPairs(ds, *split.train, scfg, augment=True, seed=scfg.seed, loud=loud,
                      audio=windows)
    val = SyncPairs(ds, *split.val, scfg, augment=False, seed=scfg.seed + 1, loud=loud,
                    audio=windows)
    val_batches = _val_batches(val, scfg.val_pairs, 2 * scfg.batch_size)

    torch.manual_seed(scfg.seed)
    model = SyncNet.from_config(cfg).to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=scfg.lr)
    step, history, best_acc, best_step = 0, [], -1.0, 0
    last_path, best_path = out_dir / LAST_NAME, out_dir / BEST_NAME
    if resume and last_path.is_file():
        payload = checkpoint.load_checkpoint(last_path, kind=CKPT_KIND, map_location=dev)
        _check_same_settings(payload["config"].syncnet, scfg, last_path)
        where = {"dataset": ds.paths.name, "split": dataclasses.asdict(split)}
        if {k: payload["extra"].get(k) for k in where} != where:
            raise checkpoint.CheckpointError(
                f"{last_path} was trained on {payload['extra'].get('dataset')!r} frames "
                f"{payload['extra'].get('split')}, not {where}; use resume=False or another "
                "out_dir")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        step = payload["step"]
        extra = payload["extra"]
        history, best_acc, best_step = extra["history"], extra["best_accuracy"], extra["best_step"]
        log.info("syncnet: resuming %s at step %d (best accuracy %.3f at step %d)",
                 last_path, step, best_acc, best_step)

    def save(path: Path) -> None:
        checkpoint.save_checkpoint(
            path, kind=CKPT_KIND, model=model, cfg=cfg, step=step, optimizer=optimizer,
            extra={"history": history, "val_accuracy": history[-1]["val_accuracy"],
                   "best_accuracy": best_acc, "best_step": best_step,
                   "split": dataclasses.asdict(split), "dataset": ds.paths.name})

    model.train()
    half = scfg.batch_size // 2
    losses: list[float] = []
    tick = time.perf_counter()
    bar = progress_bar(total=total, initial=step, desc="syncnet", unit="step",
                       enabled=progress)
    while step < total:
        rng = np.random.default_rng((scfg.seed, step))  # a batch depends on its step only
        windows = rng.integers(0, train.n_starts, half)
        idx = np.stack([2 * windows, 2 * windows + 1], 1).ravel()  # each with its negative
        faces, mels, label = (t.to(dev) for t in train.batch(idx, rng))
        optimizer.zero_grad(set_to_none=True)
        loss = sync_loss(*model(faces, mels), label)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % scfg.eval_every == 0 or step == total:
            val_loss, val_acc = validation_scores(model, val_batches, dev)
            now = time.perf_counter()
            row = {"step": step, "train_loss": float(np.mean(losses)), "val_loss": val_loss,
                   "val_accuracy": val_acc, "seconds": now - started,
                   "s_per_step": (now - tick) / len(losses)}
            history.append(row)
            log.info("syncnet step %d: train loss %.4f, val loss %.4f, val acc %.3f, "
                     "lr %.1e, %.2f s/step", step, row["train_loss"], val_loss, val_acc,
                     scfg.lr, row["s_per_step"])
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val_acc=f"{val_acc:.3f}")
            if val_acc > best_acc:
                best_acc, best_step = val_acc, step
                save(best_path)
            save(last_path)
            losses, tick = [], time.perf_counter()
    bar.close()
    if not best_path.is_file():
        raise checkpoint.CheckpointError(
            f"{last_path} reached step {step} but {best_path} is missing; train with "
            "resume=False to start over")
    log.info("syncnet: best held-out accuracy %.3f at step %d -> %s", best_acc, best_step,
             best_path)
    return SyncNetResult(path=best_path, model=load_syncnet(best_path, device=str(dev)),
                         history=history, val_accuracy=best_acc, best_step=best_step,
                         step=step, split=split, seconds=time.perf_counter() - started)


def _check_same_settings(saved: SyncNetConfig, wanted: SyncNetConfig, path: Path) -> None:
    """Resuming is exact only with the same settings (the step budget may grow)."""
    a, b = dataclasses.replace(saved, steps=0), dataclasses.replace(wanted, steps=0)
    if a != b:
        diff = {f.name: (getattr(a, f.name), getattr(b, f.name))
                for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)}
        raise checkpoint.CheckpointError(
            f"{path} was trained with other syncnet settings {diff} (saved, asked); use "
            "resume=False or another out_dir")


def load_syncnet(path: str | os.PathLike, device: str | None = None) -> SyncNet:
    """Rebuild a SyncNet from a checkpoint's stored config; eval mode, on `device`."""
    payload = checkpoint.load_checkpoint(path, kind=CKPT_KIND)
    model = SyncNet.from_config(payload["config"])
    model.load_state_dict(payload["model"])
    model.source_config = payload["config"]  # a speech SyncNet's features are made from it
    return model.to(pick_device(device)).eval()


def plot_syncnet_history(history: list[dict[str, float]]) -> Figure:
    """Loss (train and held-out) and held-out accuracy against step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    steps = [row["step"] for row in history]
    ax_loss.plot(steps, [row["train_loss"] for row in history], label="train")
    ax_loss.plot(steps, [row["val_loss"] for row in history], label="held-out")
    ax_loss.axhline(math.log(2), color="grey", ls=":", lw=0.8, label="chance")
    ax_loss.set(xlabel="step", ylabel="balanced BCE", title="SyncNet loss")
    ax_loss.legend()
    ax_acc.plot(steps, [row["val_accuracy"] for row in history], color="C2")
    ax_acc.axhline(0.5, color="grey", ls=":", lw=0.8)
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0.0, 1.0),
               title="held-out sync / off-sync accuracy")
    return fig


# ------------------------------------------------------------------ features and embeddings


def _batched(fn, arrays: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(arrays[i: i + batch]) for i in range(0, len(arrays), batch)])


@torch.no_grad()
def audio_features(encoder: AudioEncoder, mel_windows: np.ndarray, batch: int = 256,
                   device: str | None = None) -> np.ndarray:
    """The `ave` features of the generator: one 512-d vector per video frame.

    mel_windows: (T, 80, 16) float32 from `PreparedDataset.mel_windows()`. Returns (T, 512)
    float32 >= 0, unnormalised, as SyncTalk_2D's `aud_ave.npy`. Runs in eval mode on
    `device` (default: where the encoder is).
    """
    dev = torch.device(device) if device else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.to(dev).eval()

    def run(chunk: np.ndarray) -> np.ndarray:
        mel = torch.from_numpy(np.array(chunk, np.float32))[:, None].to(dev)  # (B,1,80,16)
        return encoder(mel).cpu().numpy()

    out = _batched(run, np.asarray(mel_windows), batch) if len(mel_windows) else (
        np.zeros((0, EMBED_DIM), np.float32))
    encoder.train(was_training)
    return out.astype(np.float32)


def stack_windows(frames: np.ndarray, n_frames: int) -> np.ndarray:
    """(N, S, S, 3) uint8 → (N - T + 1, 3T, S, S) float32 in [0, 1]; window i: frames i..i+T-1."""
    x = np.lib.stride_tricks.sliding_window_view(frames, n_frames, axis=0)  # (W, S, S, 3, T)
    x = x.transpose(0, 4, 3, 1, 2)  # (W, T, 3, S, S)
    return x.reshape(len(x), -1, *frames.shape[1:3]).astype(np.float32) / 255.0


@torch.no_grad()
def embed_faces(syncnet: SyncNet, patches: np.ndarray, batch: int = 128,
                device: str | None = None) -> np.ndarray:
    """Face embedding of every window of consecutive frames.

    patches: (N, H, W, 3) uint8 RGB lower-face patches (the inner crop, any size: resized to
    `image_size`), N >= n_frames. Returns (N - T + 1, 512) float32 unit vectors; row i covers
    frames i .. i+T-1 and pairs with the mel window of frame i.
    """
    cfg = syncnet.cfg
    if len(patches) < cfg.n_frames:
        raise ValueError(f"need at least {cfg.n_frames} frames, got {len(patches)}")
    dev = torch.device(device) if device else next(syncnet.parameters()).device
    frames = data.resize_patches(np.asarray(patches), cfg.image_size)
    syncnet.to(dev).eval()
    chunks = []
    for i in range(0, len(frames) - cfg.n_frames + 1, batch):
        x = stack_windows(frames[i: i + batch + cfg.n_frames - 1], cfg.n_frames)
        emb = syncnet.face_encoder(torch.from_numpy(x).to(dev))
        chunks.append(F.normalize(emb, dim=1).cpu().numpy())
    return np.concatenate(chunks).astype(np.float32)


@torch.no_grad()
def embed_audio(syncnet: SyncNet, mel_windows: np.ndarray, batch: int = 256,
                device: str | None = None, features: np.ndarray | None = None) -> np.ndarray:
    """(T, 80, 16) mel windows → (T, 512) float32 unit vectors of SyncNet's audio side; a
    speech SyncNet hears `features` (T, F) instead (row t: frames t..t+T-1)."""
    if syncnet.speech:
        feats = _embed_speech(syncnet, audio_windows(syncnet.cfg, mel_windows, features),
                              batch, device)
    else:
        feats = audio_features(syncnet.audio_encoder, mel_windows, batch, device)
    return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def _embed_speech(syncnet: SyncNet, windows: np.ndarray, batch: int,
                  device: str | None) -> np.ndarray:
    dev = torch.device(device) if device else next(syncnet.parameters()).device
    encoder = syncnet.audio_encoder.to(dev).eval()
    return _batched(lambda w: encoder(torch.from_numpy(np.ascontiguousarray(w)).to(dev)
                                      ).cpu().numpy(), windows, batch)


@dataclass(frozen=True)
class SyncOffset:
    """Result of `sync_offset`: offset in frames (> 0: audio late), confidence, distances."""

    offset: int
    confidence: float  # median minus minimum distance; higher = clearer sync
    distances: np.ndarray  # (2 * max_shift + 1,) mean distance per shift -max..max
    shifts: np.ndarray  # (2 * max_shift + 1,) int


def sync_offset(face_emb: np.ndarray, audio_emb: np.ndarray, max_shift: int = 15) -> SyncOffset:
    """Audio-video offset in the manner of SyncNet (LSE-D / LSE-C, docs/design.md §7).

    face_emb: (N, D) from `embed_faces`, audio_emb: (M, D) from `embed_audio` (row i of each
    starts at frame i). For each shift k in -max..max the mean L2 distance between face row i
    and audio row i + k over the rows both have; offset = argmin, confidence = median - min.
    A positive offset means the audio matching a face comes k frames later (audio lags).
    """
    n = min(len(face_emb), len(audio_emb))
    if n <= 2 * max_shift:
        log.warning("only %d windows for shifts up to %d: distances are noisy", n, max_shift)
    shifts = np.arange(-max_shift, max_shift + 1)
    dists = np.full(len(shifts), np.nan, np.float32)
    for s, k in enumerate(shifts):
        lo, hi = max(0, -k), min(len(face_emb), len(audio_emb) - k)
        if hi > lo:
            d = np.linalg.norm(face_emb[lo:hi] - audio_emb[lo + k: hi + k], axis=1)
            dists[s] = d.mean()
    best = int(np.nanargmin(dists))
    return SyncOffset(offset=int(shifts[best]),
                      confidence=float(np.nanmedian(dists) - dists[best]),
                      distances=dists, shifts=shifts)


def dataset_offset(syncnet: SyncNet, ds: PreparedDataset, start: int = 0,
                   stop: int | None = None, max_shift: int = 15,
                   device: str | None = None, features: np.ndarray | None = None
                   ) -> SyncOffset:
    """`sync_offset` of frames [start, stop) of a prepared dataset (its own audio).

    A real recording should give offset 0 (+-1) and a clear confidence; use it on the
    validation block or the held-out tail to check a trained SyncNet.
    """
    stop = ds.n_frames if stop is None else stop
    faces = dataset_faces(ds, syncnet.cfg, start, stop)
    face_emb = embed_faces(syncnet, faces, device=device)
    audio_emb = embed_audio(syncnet, np.asarray(ds.mel_windows()[start:stop]), device=device,
                            features=None if features is None else features[start:stop])
    return sync_offset(face_emb, audio_emb, max_shift)


__all__ = [
    "AudioEncoder",
    "AveWeightsError",
    "ConvBlock",
    "FaceEncoder",
    "SpeechAudioEncoder",
    "Split",
    "SyncNet",
    "SyncNetResult",
    "SyncOffset",
    "SyncPairs",
    "audio_features",
    "audio_windows",
    "dataset_faces",
    "dataset_offset",
    "embed_audio",
    "embed_faces",
    "load_ave_weights",
    "load_syncnet",
    "loud_windows",
    "plot_syncnet_history",
    "split_frames",
    "stack_windows",
    "sync_loss",
    "sync_offset",
    "train_syncnet",
    "validation_scores",
]
