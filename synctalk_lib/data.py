"""Training data from a preprocessed person: frame splits and generator samples.

Samples come from the cached crops (no JPEG decoding per step). The crops are resized to the
model's image size once, when the dataset is built, and held in memory (160 px: 77 kB a frame)
or read from the memory-mapped cache when no resize is needed (320 px, the `hd328` preset).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from . import crop, landmarks
from .config import Config
from .dataset import PreparedDataset
from .unet import AUDIO_WINDOW


@dataclass(frozen=True)
class Split:
    """Frame indices: train, validation (a block before the tail) and the held-out tail.

    Validation and held-out parts are contiguous blocks, so neighbouring frames, which look
    almost the same, cannot leak from training into them.
    """

    train: np.ndarray
    val: np.ndarray
    heldout: np.ndarray


def split_frames(n_frames: int, heldout_fraction: float, val_fraction: float) -> Split:
    n_held = round(n_frames * heldout_fraction)
    n_val = round(n_frames * val_fraction)
    if n_frames - n_held - n_val < 2:
        raise ValueError(f"{n_frames} frames are too few to hold out {n_held} and validate on "
                         f"{n_val}; record a longer video or lower the fractions")
    idx = np.arange(n_frames)
    cut_val, cut_held = n_frames - n_held - n_val, n_frames - n_held
    return Split(idx[:cut_val], idx[cut_val:cut_held], idx[cut_held:])


def feature_window(features: np.ndarray, index: int, width: int = AUDIO_WINDOW) -> np.ndarray:
    """Features of the `width` frames centred on `index`, edges repeated: (width, F)."""
    pos = np.clip(np.arange(index - width // 2, index + width - width // 2), 0,
                  len(features) - 1)
    return features[pos]


def resize_patches(patches: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB (array or memmap) → (N, size, size, 3) uint8, area-averaged."""
    if patches.shape[1:3] == (size, size):
        return np.ascontiguousarray(patches)
    out = np.empty((len(patches), size, size, 3), np.uint8)
    for i in range(len(patches)):
        out[i] = cv2.resize(np.asarray(patches[i]), (size, size), interpolation=cv2.INTER_AREA)
    return out


def model_patches(ds: PreparedDataset, image_size: int, start: int = 0,
                  stop: int | None = None) -> np.ndarray:
    """(N, S, S, 3) uint8 RGB inner patches of frames [start, stop) at a model's size.

    At the crop's own inner size this is a memory-mapped view; otherwise frames are read one at
    a time and only the small copies are held (1500 frames at 160 px: 115 MB).
    """
    ccfg = ds.config.crop
    crops = ds.crops()[start:stop]
    patches = crops[:, ccfg.ring: ccfg.size - ccfg.ring, ccfg.ring: ccfg.size - ccfg.ring]
    return patches if image_size == ccfg.inner else resize_patches(patches, image_size)


def mean_colour(patches: np.ndarray, indices: np.ndarray, cfg: Config,
                samples: int = 64) -> np.ndarray:
    """(3,) mean RGB in [0, 1] of the masked (generated) area over `samples` of the frames."""
    picks = indices[np.linspace(0, len(indices) - 1, min(samples, len(indices))).astype(int)]
    x0, y0, x1, y1 = crop.mask_rect(cfg.crop, patches.shape[1])
    area = np.stack([np.asarray(patches[i])[y0:y1, x0:x1] for i in picks])
    return area.reshape(-1, 3).mean(axis=0) / 255


def mouth_box(ds: PreparedDataset, image_size: int, margin: float = 0.35) -> tuple[int, ...]:
    """(x0, y0, x1, y1) in model pixels around the mouth, from the landmarks' median.

    One box for the whole person: the crop follows the face, so the mouth stays put in it.
    Schemes without lip points fall back to the middle of the masked rectangle's lower half.
    """
    ccfg = ds.config.crop
    scheme = ds.scheme
    if scheme.has_mouth and scheme.mouth_left is not None and scheme.mouth_right is not None:
        points, boxes = ds.points(), ds.boxes()
        scale = ccfg.size / (boxes[:, 2] - boxes[:, 0])
        ids = [scheme.mouth_left, scheme.mouth_right, scheme.lip_top, scheme.lip_bottom]
        local = (points[:, ids] - boxes[:, None, :2]) * scale[:, None, None] - ccfg.ring
        lo, hi = np.median(local.min(axis=1), axis=0), np.median(local.max(axis=1), axis=0)
        pad = margin * (hi[0] - lo[0])
        box = np.array([lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + 1.5 * pad])
    else:
        x0, y0, x1, y1 = crop.mask_rect(ccfg)
        box = np.array([x0 + 0.2 * (x1 - x0), y0 + 0.5 * (y1 - y0),
                        x1 - 0.2 * (x1 - x0), y1 - 0.05 * (y1 - y0)])
    box = np.clip(box * image_size / ccfg.inner, 0, image_size).round().astype(int)
    return tuple(int(v) for v in box)


def _training_frames(ds: PreparedDataset, cfg: Config) -> np.ndarray:
    split = split_frames(ds.n_frames, cfg.train.heldout_fraction, cfg.train.val_fraction)
    return split.train if len(split.train) else np.arange(ds.n_frames)


def closed_mouth_frames(ds: PreparedDataset, cfg: Config) -> np.ndarray:
    """Training frames (held-out ones are not candidates) with the 10 % most closed mouths,
    most closed first; empty when the landmarks have no lips."""
    frames = _training_frames(ds, cfg)
    opening = landmarks.mouth_opening(ds.points()[frames], ds.scheme)
    if np.all(np.isnan(opening)):
        return np.zeros(0, np.int64)
    closed = np.flatnonzero(opening <= np.nanpercentile(opening, 10))
    return frames[closed[np.argsort(opening[closed], kind="stable")]]


def still_reference_index(ds: PreparedDataset, cfg: Config) -> int:
    """A closed-mouth frame in a typical head position: the generator's reference at inference.

    A closed mouth gives closed, still pauses, and training shows the generator references
    like it (`train.reference`). Of `closed_mouth_frames`, the one whose face sits nearest the
    training frames' median position and size.
    """
    closed = closed_mouth_frames(ds, cfg)
    if not len(closed):  # no lip landmarks: the start frame
        return int(cfg.infer.start_frame)
    typical = np.median(ds.boxes()[_training_frames(ds, cfg)].astype(np.float64), axis=0)
    boxes = ds.boxes()[closed].astype(np.float64)
    off = np.abs(boxes - typical).max(axis=1) / (typical[2] - typical[0])
    return int(closed[np.argmin(off)])


class GeneratorSamples(Dataset):
    """Windows of consecutive frames for generator training.

    Item k → dict with
      "inputs": (W, 6, S, S) float32 [0,1] RGB: ch 0-2 one reference frame (a random one of
                `references`, the same for the whole window), ch 3-5 the masked target;
      "targets": (W, 3, S, S) float32 [0,1] RGB real frames;
      "audio": (W, 16, F) float32 audio features around each frame (with `variants`, an
               augmented sample's come from one of the sets at random, the original among
               them);
      "mel": what SyncNet hears with the W stacked frames (`syncnet.audio_windows` of the
             window's first frame): (1, 80, 16) float32 mel, or (W, F) speech features;
      "index": first frame index.
    """

    def __init__(self, patches: np.ndarray, features: np.ndarray, sync_audio: np.ndarray,
                 starts: np.ndarray, references: np.ndarray, cfg: Config, augment: bool,
                 variants: np.ndarray | None = None):
        self.patches, self.features, self.mels = patches, features, sync_audio
        # (V, T, F) other feature sets of the same frames (`train.audio_variants`)
        self.variants = variants if variants is not None and len(variants) else None
        self.starts, self.references = starts, references
        self.window = cfg.train.window
        self.rect = crop.mask_rect(cfg.crop, cfg.model.image_size)
        self.augment = augment

    @classmethod
    def for_indices(cls, patches: np.ndarray, features: np.ndarray, sync_audio: np.ndarray,
                    indices: np.ndarray, cfg: Config, augment: bool,
                    references: np.ndarray | None = None,
                    variants: np.ndarray | None = None) -> GeneratorSamples:
        """Windows that lie wholly inside `indices` (a contiguous block or the train part).
        sync_audio: per frame, what SyncNet hears (`syncnet.audio_windows`). references: the
        frames a sample's reference is drawn from (default: `indices`)."""
        w = cfg.train.window
        index_set = set(indices.tolist())
        starts = np.array([i for i in indices if all(i + k in index_set for k in range(w))])
        if len(starts) == 0:
            raise ValueError(
                f"no run of {w} consecutive frames among {len(indices)} frames "
                f"({indices[0] if len(indices) else '-'}..); use a longer video, or raise "
                "train.val_fraction / lower train.window")
        return cls(patches, features, sync_audio, starts,
                   indices if references is None else references, cfg, augment, variants)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[k])
        frames = np.arange(start, start + self.window)
        ref_index = int(self.references[torch.randint(len(self.references), ()).item()])
        targets = torch.from_numpy(np.stack([np.asarray(self.patches[i]) for i in frames]))
        targets = targets.permute(0, 3, 1, 2).float() / 255  # (W, 3, S, S)
        reference = torch.from_numpy(np.asarray(self.patches[ref_index])).permute(2, 0, 1)
        reference = reference.float() / 255  # (3, S, S)
        if self.augment:
            gain = 1 + 0.1 * (torch.rand(3, 1, 1) - 0.5)
            bias = 0.05 * (torch.rand(3, 1, 1) - 0.5)
            targets = (targets * gain + bias).clamp(0, 1)
            reference = (reference * gain + bias).clamp(0, 1)
        masked = targets.clone()
        x0, y0, x1, y1 = self.rect
        masked[:, :, y0:y1, x0:x1] = 0
        inputs = torch.cat([reference.expand_as(targets), masked], dim=1)  # (W, 6, S, S)
        feats = self.features
        if self.augment and self.variants is not None:
            pick = int(torch.randint(len(self.variants) + 1, ()).item())
            feats = feats if pick == 0 else self.variants[pick - 1]
        audio = np.stack([feature_window(feats, i) for i in frames])
        return {
            "inputs": inputs,
            "targets": targets,
            "audio": torch.from_numpy(np.ascontiguousarray(audio, np.float32)),
            "mel": torch.from_numpy(np.array(self.mels[start], np.float32)),
            "index": torch.tensor(start),
        }
