"""Generator losses (docs/design.md §5): L1, mouth-weighted L1, perceptual, sync and temporal.

The perceptual term uses VGG19 ImageNet features when the weights are on disk
(`vgg19-dcbb9e9d.pth` in `$TORCH_HOME/hub/checkpoints/`, torchvision's file; nothing is
downloaded); otherwise MS-SSIM, which needs no weights. `perceptual_loss_name` says which.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import files

log = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"
# VGG19 "features" layout: channel counts, "M" = max-pool; the ReLUs after conv1_2, conv2_2,
# conv3_4 and conv4_4 (indices in torchvision's Sequential) are the compared feature maps.
_VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512)
_VGG19_TAPS = (3, 8, 17, 26)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_LAYOUT:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            channels = int(item)
    return nn.Sequential(*layers)


def find_vgg19_weights() -> Path | None:
    path = files.torch_hub_checkpoints() / VGG19_FILE
    return path if path.is_file() else None


class VGGPerceptual(nn.Module):
    """Mean L1 between VGG19 feature maps of prediction and target (inputs RGB in [0, 1])."""

    def __init__(self, weights: Path):
        super().__init__()
        self.features = _vgg19_features()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        own = {k.removeprefix("features."): v for k, v in state.items()
               if k.startswith("features.") and int(k.split(".")[1]) < len(self.features)}
        self.features.load_state_dict(own)
        self.features.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([pred, target]) - self.mean) / self.std
        loss = pred.new_zeros(())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _VGG19_TAPS:
                a, b = x.chunk(2)
                loss = loss + F.l1_loss(a, b)
        return loss / len(_VGG19_TAPS)


def _gaussian_1d(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _gaussian_blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Zero-padded 2-D Gaussian blur as two 1-D passes: the same sums as the k×k kernel at
    2k instead of k² multiply-adds a pixel (the perceptual term was a tenth of a CPU step)."""
    c, k = x.shape[1], g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor):
    """(SSIM map, contrast-structure map) of Wang et al. with Gaussian window `g`."""
    if y.requires_grad:
        stats = _gaussian_blur(torch.cat([x, y, x * x, y * y, x * y], 1), g)
        mu_x, mu_y, exx, eyy, exy = stats.chunk(5, dim=1)
    else:  # a loss target: its statistics need no backward pass (0.3 -> 0.2 s a cpu step)
        with torch.no_grad():
            mu_y, eyy = _gaussian_blur(torch.cat([y, y * y], 1), g).chunk(2, dim=1)
        mu_x, exx, exy = _gaussian_blur(torch.cat([x, x * x, x * y], 1), g).chunk(3, dim=1)
    sxx, syy, sxy = exx - mu_x**2, eyy - mu_y**2, exy - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return luminance * cs, cs


def ssim(x: torch.Tensor, y: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images in [0, 1]; 1 = identical."""
    return _ssim_parts(x, y, _gaussian_1d(window_size, 1.5, x.device, x.dtype))[0].mean()


def ms_ssim(x: torch.Tensor, y: torch.Tensor, scales: int | None = None) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) with as many scales as the image size allows."""
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363, 0.1333], device=x.device)
    max_scales = max(1, min(5, int(torch.log2(torch.tensor(min(x.shape[-2:]) / 11.0))) + 1))
    n = min(scales or max_scales, max_scales)
    weights = weights[:n] / weights[:n].sum()
    window = _gaussian_1d(7 if min(x.shape[-2:]) < 64 else 11, 1.5, x.device, x.dtype)
    value = x.new_ones(())
    for level in range(n):
        full, cs = _ssim_parts(x, y, window)
        term = full if level == n - 1 else cs
        value = value * term.mean().clamp(min=1e-6) ** weights[level]
        if level < n - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return value


class MSSSIMLoss(nn.Module):
    """1 − MS-SSIM: the perceptual term when no VGG19 weights are on disk."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1 - ms_ssim(pred, target)


def perceptual_loss() -> tuple[nn.Module, str]:
    """(loss module, name): VGG19 when its weights are on disk, else MS-SSIM."""
    weights = find_vgg19_weights()
    if weights is not None:
        return VGGPerceptual(weights), "vgg19"
    log.info("no %s in $TORCH_HOME/hub/checkpoints: perceptual term is MS-SSIM", VGG19_FILE)
    return MSSSIMLoss(), "ms-ssim"


def weighted_l1(pred: torch.Tensor, target: torch.Tensor, box: tuple[int, ...],
                mouth_weight: float) -> torch.Tensor:
    """L1 with `1 + mouth_weight` inside the mouth box (x0, y0, x1, y1); (N, 3, S, S) inputs."""
    diff = (pred - target).abs()
    x0, y0, x1, y1 = box
    mouth = diff[..., y0:y1, x0:x1].mean() if x1 > x0 and y1 > y0 else diff.new_zeros(())
    return diff.mean() + mouth_weight * mouth


def temporal_loss(pred: torch.Tensor, target: torch.Tensor, box: tuple[int, ...]) -> torch.Tensor:
    """Mouth change between neighbouring frames must match the real change.

    pred, target: (B, W, 3, S, S). Change the real video does not show (jitter on held shapes,
    motion in silence) is penalised; change that it shows is demanded.
    """
    if pred.shape[1] < 2:
        return pred.new_zeros(())
    x0, y0, x1, y1 = box
    p, t = pred[..., y0:y1, x0:x1], target[..., y0:y1, x0:x1]
    return ((p[:, 1:] - p[:, :-1]) - (t[:, 1:] - t[:, :-1])).abs().mean()
