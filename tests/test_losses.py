import pytest
import torch
import torch.nn.functional as F

from synctalk_lib import losses


def _ssim_2d(x: torch.Tensor, y: torch.Tensor, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al.'s SSIM written out with a full k×k Gaussian kernel."""
    coords = torch.arange(size, dtype=x.dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    w = (g[:, None] * g[None, :]).expand(c, 1, size, size)

    def blur(t):
        return F.conv2d(t, w, padding=size // 2, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * sxy + c2) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def test_separable_ssim_equals_the_full_kernel():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 48, 40, generator=gen)
    y = (x + 0.2 * torch.rand(2, 3, 48, 40, generator=gen)).clamp(0, 1)
    assert float(losses.ssim(x, y)) == pytest.approx(_ssim_2d(x, y), abs=1e-5)
    assert float(losses.ssim(x, x)) == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_falls_as_noise_grows():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 160, 160, generator=gen)
    x = F.avg_pool2d(x, 5, 1, 2)  # some structure at several scales
    values = [float(losses.ms_ssim(x, (x + a * torch.randn(x.shape, generator=gen)).clamp(0, 1)))
              for a in (0.0, 0.05, 0.2)]
    assert values[0] == pytest.approx(1.0, abs=1e-5)
    assert values[0] > values[1] > values[2]
