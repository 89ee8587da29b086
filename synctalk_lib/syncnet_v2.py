"""syncnet_python's SyncNet (joonson, LRS2-trained `syncnet_v2.model`): the field's yardstick.

LSE-D / LSE-C as papers report them need this exact network and its input: 5 stacked 224 px
BGR face crops against 13 MFCCs at 100 Hz (0.2 s). This module re-implements the network
(same layer names, so the published file loads), python_speech_features' MFCC in numpy, and
the face crops of its run_pipeline.py (from landmarks instead of S3FD). It never downloads:
the weights are used when the user has them (`checkpoints/syncnet_v2.model`,
`$SYNCNET_V2`). `evaluate.syncnet_v2_sync` turns its embeddings into offset and confidence.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import scipy.fft
import scipy.signal
import torch
from torch import nn

from . import files
from .device import pick_device

log = logging.getLogger(__name__)


V2_FILE = "syncnet_v2.model"
V2_SIZE = 224  # face crop side
V2_CROP_SCALE = 0.4  # run_pipeline.py --crop_scale: the crop reaches below the chin
V2_SMOOTH = 13  # median filter of box centre and size over frames
V2_PAD_VALUE = 110  # grey of the border where the crop leaves the frame
V2_WINDOW = 5  # frames per face window
MFCC_PER_FRAME, MFCC_WINDOW = 4, 20  # 100 MFCC frames/s: 4 per video frame, 20 = 0.2 s
MFCC_WIN, MFCC_HOP, MFCC_NFFT = 400, 160, 512  # 25 ms frames every 10 ms, 512-point FFT
MFCC_FILTERS, MFCC_CEPS, MFCC_LIFTER, MFCC_PREEMPH = 26, 13, 22, 0.97
INT16_SCALE = 32768.0  # syncnet_python reads the wav as int16: its log energies assume that scale


class SyncNetV2WeightsError(RuntimeError):
    """syncnet_v2.model is missing or is not that network's weights."""


def _conv_bn_relu(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)]


def _embedding_head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                         nn.Linear(512, embed_dim))


class SyncNetV2(nn.Module):
    """The SyncNet of joonson/syncnet_python (`SyncNetModel.S`), trained on LRS2 by its authors.

    Module names and layer positions are those of `S`, so `syncnet_v2.model` (a state dict)
    loads unchanged; a 1x1 max-pool that does nothing in `S` is an Identity here. Inputs are
    those of `SyncNetInstance`: faces BGR in [0, 255], MFCCs of int16-scaled audio.
    """

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        conv2, bn2 = nn.Conv2d, nn.BatchNorm2d
        self.netcnnaud = nn.Sequential(  # (B, 1, 13, 20) MFCC window
            *_conv_bn_relu(conv2(1, 64, 3, 1, 1), bn2(64)),
            nn.Identity(),
            *_conv_bn_relu(conv2(64, 192, 3, 1, 1), bn2(192)),
            nn.MaxPool2d(3, stride=(1, 2)),  # (B, 192, 11, 9)
            *_conv_bn_relu(conv2(192, 384, 3, 1, 1), bn2(384)),
            *_conv_bn_relu(conv2(384, 256, 3, 1, 1), bn2(256)),
            *_conv_bn_relu(conv2(256, 256, 3, 1, 1), bn2(256)),
            nn.MaxPool2d(3, stride=2),  # (B, 256, 5, 4)
            *_conv_bn_relu(conv2(256, 512, (5, 4), 1, 0), bn2(512)),  # (B, 512, 1, 1)
        )
        self.netfcaud = _embedding_head(embed_dim)
        self.netfclip = _embedding_head(embed_dim)
        conv3, bn3 = nn.Conv3d, nn.BatchNorm3d
        self.netcnnlip = nn.Sequential(  # (B, 3, 5, 224, 224) five BGR frames
            *_conv_bn_relu(conv3(3, 96, (5, 7, 7), (1, 2, 2), 0), bn3(96)),  # (B, 96, 1, 109, 109)
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # 54
            *_conv_bn_relu(conv3(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), bn3(256)),  # 26
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 13
            *_conv_bn_relu(conv3(256, 256, (1, 3, 3), 1, (0, 1, 1)), bn3(256)),
            *_conv_bn_relu(conv3(256, 256, (1, 3, 3), 1, (0, 1, 1)), bn3(256)),
            *_conv_bn_relu(conv3(256, 256, (1, 3, 3), 1, (0, 1, 1)), bn3(256)),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # 6
            *_conv_bn_relu(conv3(256, 512, (1, 6, 6), 1, 0), bn3(512)),  # (B, 512, 1, 1, 1)
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """mfcc: (B, 1, 13, 20) float32. Returns (B, 1024) float32, unnormalised."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))  # (B, 512) -> (B, 1024)

    def forward_lip(self, faces: torch.Tensor) -> torch.Tensor:
        """faces: (B, 3, 5, 224, 224) float32 BGR in [0, 255]. Returns (B, 1024) float32."""
        return self.netfclip(self.netcnnlip(faces).flatten(1))  # (B, 512) -> (B, 1024)


def search_paths() -> list[Path]:
    """Where `load_syncnet_v2` looks when no path is given: $SYNCNET_V2, then checkpoints/
    and the torch hub folder."""
    env = os.environ.get("SYNCNET_V2")
    paths = [Path(env)] if env else []
    return paths + [Path("checkpoints") / V2_FILE, files.torch_hub_checkpoints() / V2_FILE]


def load_syncnet_v2(path: str | os.PathLike | None = None,
                    device: str | None = None) -> SyncNetV2:
    """Load syncnet_python's `syncnet_v2.model` (never downloaded); eval mode, on `device`.

    The file is a state dict of `S` (keys `netcnnaud.0.weight`, …); a `__S__.` or `module.`
    prefix is accepted and BatchNorm counters missing from old files are filled in.
    """
    candidates = [Path(path)] if path is not None else search_paths()
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        where = ", ".join(str(p) for p in candidates)
        raise SyncNetV2WeightsError(
            f"no {V2_FILE} at {where}. This workbench never downloads weights: get it with "
            "download_model.sh of github.com/joonson/syncnet_python (LRS2-trained SyncNet) and "
            f"put it at checkpoints/{V2_FILE} or set $SYNCNET_V2; until then the person's own "
            "SyncNet gives the sync scores")
    try:
        state = torch.load(found, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise SyncNetV2WeightsError(f"cannot read {found} as a state dict of tensors "
                                    f"({type(exc).__name__}); is it damaged?") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SyncNetV2WeightsError(f"{found} holds a {type(state).__name__}, not a state dict "
                                    "of tensors (expected keys like 'netcnnaud.0.weight')")
    net = SyncNetV2()
    own = net.state_dict()
    prefixes = [k[: -len("netcnnaud.0.weight")] for k in state if k.endswith("netcnnaud.0.weight")]
    prefix = prefixes[0] if prefixes else ""
    required = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in required if prefix + k not in state]
    if missing:
        raise SyncNetV2WeightsError(
            f"{found} is not syncnet_python's SyncNet: {len(missing)} of {len(required)} tensors "
            f"missing (e.g. {missing[:3]}); it has keys such as {list(state)[:4]}")
    wrong = [f"{k}: file {tuple(state[prefix + k].shape)}, model {tuple(own[k].shape)}"
             for k in required if state[prefix + k].shape != own[k].shape]
    if wrong:
        raise SyncNetV2WeightsError(f"{found} has other layer sizes ({len(wrong)} tensors, "
                                    f"e.g. {wrong[0]})")
    net.load_state_dict({k: state.get(prefix + k, own[k]) for k in own})
    return net.to(pick_device(device)).eval()


def _psf_filterbank(sample_rate: int) -> np.ndarray:
    """(26, 257) triangular mel filters on whole FFT bins, python_speech_features' layout."""
    top_mel = 2595 * np.log10(1 + sample_rate / 2 / 700.0)  # HTK mel of the Nyquist frequency
    mels = np.linspace(0.0, top_mel, MFCC_FILTERS + 2)
    edges = np.floor((MFCC_NFFT + 1) * 700 * (10 ** (mels / 2595.0) - 1) / sample_rate)
    bins = np.arange(MFCC_NFFT // 2 + 1)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where((bins >= lo) & (bins < mid), (bins - lo) / (mid - lo), 0.0)
        fall = np.where((bins >= mid) & (bins < hi), (hi - bins) / (hi - mid), 0.0)
    return rise + fall


def mfcc(wav: np.ndarray, sample_rate: int = 16_000) -> np.ndarray:
    """(13, T) float64 MFCCs at 100 frames/s, as syncnet_python feeds its network.

    python_speech_features.mfcc with its defaults, on the wav as int16 values: pre-emphasis
    0.97, 25 ms rectangular frames every 10 ms (the last zero-padded), 512-point power
    spectrum, 26 mel filters on whole FFT bins, log, orthonormal DCT-II, lifter 22, and
    coefficient 0 replaced by the log frame energy. librosa's MFCC differs in filters, window
    and scaling, so this is written out (equal to the reference to float precision).
    """
    x = np.clip(np.round(np.asarray(wav, np.float64) * INT16_SCALE), -INT16_SCALE,
                INT16_SCALE - 1)
    x = np.append(x[0], x[1:] - MFCC_PREEMPH * x[:-1])
    n = 1 if len(x) <= MFCC_WIN else 1 + math.ceil((len(x) - MFCC_WIN) / MFCC_HOP)
    x = np.concatenate([x, np.zeros((n - 1) * MFCC_HOP + MFCC_WIN - len(x))])
    frames = np.lib.stride_tricks.sliding_window_view(x, MFCC_WIN)[::MFCC_HOP][:n]  # (n, 400)
    power = np.abs(np.fft.rfft(frames, MFCC_NFFT)) ** 2 / MFCC_NFFT  # (n, 257)
    tiny = np.finfo(float).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, tiny, energy)
    bands = power @ _psf_filterbank(sample_rate).T  # (n, 26)
    bands = np.where(bands == 0, tiny, bands)
    ceps = scipy.fft.dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :MFCC_CEPS]
    ceps *= 1 + (MFCC_LIFTER / 2) * np.sin(np.pi * np.arange(MFCC_CEPS) / MFCC_LIFTER)
    ceps[:, 0] = np.log(energy)
    return ceps.T


def face_boxes(points: np.ndarray) -> np.ndarray:
    """(N, P, 2) landmarks → (N, 4) face boxes standing in for syncnet_python's S3FD boxes.

    The box is the landmarks' extent (Face Mesh: forehead to chin, cheek to cheek), which is
    close to a face detector's box but not identical: LSE numbers may differ slightly from
    those of the reference pipeline on the same video.
    """
    return np.concatenate([points.min(axis=1), points.max(axis=1)], axis=1).astype(np.float32)


def face_crop(frame: np.ndarray, crop_box: np.ndarray) -> np.ndarray:
    """One (224, 224, 3) uint8 RGB face crop the way run_pipeline.py cuts it.

    crop_box: (cx, cy, half) from `crop_boxes`. The crop spans half above the
    centre to 1.8 half below it and 1.4 half to each side (crop_scale 0.4), integer-sliced,
    grey (110) outside the frame, then resized bilinearly.
    """
    cx, cy, half = (float(v) for v in crop_box)
    if half <= 1:
        raise ValueError(f"face box half-size {half:.1f} px is too small for a face crop")
    s = V2_CROP_SCALE
    r0, r1 = math.floor(cy - half), math.floor(cy + half * (1 + 2 * s))
    c0, c1 = math.floor(cx - half * (1 + s)), math.floor(cx + half * (1 + s))
    out = np.full((r1 - r0, c1 - c0, 3), V2_PAD_VALUE, np.uint8)
    h, w = frame.shape[:2]
    fr0, fr1, fc0, fc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    if fr1 > fr0 and fc1 > fc0:
        out[fr0 - r0: fr1 - r0, fc0 - c0: fc1 - c0] = frame[fr0:fr1, fc0:fc1]
    return cv2.resize(out, (V2_SIZE, V2_SIZE), interpolation=cv2.INTER_LINEAR)


def crop_boxes(points: np.ndarray) -> np.ndarray:
    """(N, P, 2) landmarks → (N, 3) (cx, cy, half) crop boxes for `face_crop`.

    As run_pipeline.py: half = half the longer side of the face box; half and centre are
    median-filtered over 13 frames (scipy.signal.medfilt, zero-padded ends included).
    """
    face = face_boxes(points)
    half = np.maximum(face[:, 3] - face[:, 1], face[:, 2] - face[:, 0]) / 2
    cx, cy = (face[:, 0] + face[:, 2]) / 2, (face[:, 1] + face[:, 3]) / 2
    if len(face) >= V2_SMOOTH:
        half, cx, cy = (scipy.signal.medfilt(v, V2_SMOOTH) for v in (half, cx, cy))
    return np.stack([cx, cy, half], axis=1).astype(np.float32)


@torch.no_grad()
def embed(net: SyncNetV2, face_crops: np.ndarray, wav: np.ndarray, n_windows: int,
          sample_rate: int = 16_000, batch: int = 20, progress: bool = True
          ) -> tuple[np.ndarray, np.ndarray]:
    """Face and audio embeddings of windows 0..n_windows-1 (5 frames vs 20 MFCC frames each),
    computed as SyncNetInstance does. face_crops: (N, 224, 224, 3) uint8 RGB."""
    from .progress import progress_bar

    coeffs = mfcc(wav, sample_rate).astype(np.float32)  # (13, T)
    dev = next(net.parameters()).device
    net.eval()
    face_emb, audio_emb = [], []
    for i in progress_bar(range(0, n_windows, batch), desc="syncnet_v2", unit="batch",
                          enabled=progress):
        idx = range(i, min(n_windows, i + batch))
        bgr = face_crops[i: idx[-1] + V2_WINDOW][..., ::-1]  # RGB -> BGR, as cv2 read them
        clip = torch.from_numpy(np.ascontiguousarray(bgr)).float().permute(3, 0, 1, 2)
        faces = torch.stack([clip[:, j - i: j - i + V2_WINDOW] for j in idx])  # (B,3,5,224,224)
        mf = torch.stack([torch.from_numpy(
            coeffs[:, MFCC_PER_FRAME * j: MFCC_PER_FRAME * j + MFCC_WINDOW]) for j in idx])
        with torch.no_grad():
            face_emb.append(net.forward_lip(faces.to(dev)).cpu().numpy())
            audio_emb.append(net.forward_aud(mf[:, None].to(dev)).cpu().numpy())  # (B,1,13,20)
    return np.concatenate(face_emb), np.concatenate(audio_emb)
