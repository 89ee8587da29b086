"""A small patch discriminator on the mouth box: the adversarial term of generator training.

L1 and perceptual losses are minimised by the average of the mouths an audio frame could go
with, which is a half-open, soft mouth: the regression-to-the-mean that keeps a generated
mouth less open and less sharp than the person's. A discriminator that scores every
patch of the mouth box as real or generated rewards a mouth that commits to one shape with
the lips' edges and teeth of a real frame, as the high-quality variants of the field do
(Wav2Lip's HQ discriminator, MuseTalk's GAN stage). Training never needs it at inference.

Least-squares GAN losses (Mao et al. 2017) with spectral normalisation keep the pair stable
at the small batches a CPU step holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class MouthDiscriminator(nn.Module):
    """(N, 3, h, w) RGB mouth crops in [0, 1] → (N, 1, h/8, w/8) realness scores per patch.

    Three stride-2 convolutions: each score sees a receptive field of about 30 px, a lip's
    width at 160 px, so it judges texture and edges, not where the mouth is.
    """

    def __init__(self, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width):
            layers += [spectral_norm(nn.Conv2d(channels, out, 4, stride=2, padding=1)),
                       nn.LeakyReLU(0.2)]
            channels = out
        layers.append(spectral_norm(nn.Conv2d(channels, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, mouth: torch.Tensor) -> torch.Tensor:
        return self.net(mouth * 2 - 1)


def mouth_crops(images: torch.Tensor, box: tuple[int, ...]) -> torch.Tensor:
    """(N, 3, S, S) → (N, 3, y1-y0, x1-x0): the mouth box the generator's L1 weights too."""
    x0, y0, x1, y1 = box
    return images[..., y0:y1, x0:x1]


def generator_loss(scores_fake: torch.Tensor) -> torch.Tensor:
    """The generator wants its mouths scored real (1)."""
    return F.mse_loss(scores_fake, torch.ones_like(scores_fake))


def discriminator_loss(scores_real: torch.Tensor, scores_fake: torch.Tensor) -> torch.Tensor:
    """Real mouths to 1, generated (detached) to 0."""
    return 0.5 * (F.mse_loss(scores_real, torch.ones_like(scores_real))
                  + F.mse_loss(scores_fake, torch.zeros_like(scores_fake)))
