"""The U-Net 328 generator: a masked lower-face crop plus a reference crop and an audio window in,
the completed crop out (docs/design.md §3).

A re-implementation of SyncTalk_2D's `unet_328.py` (`Model(6, mode)`): the `hd328` preset has
the same layers and parameter count (12,186,935 for `ave` and `hubert`, 12,986,871 for
`wenet`), and `load_synctalk2d_checkpoint` loads its weights. Differences that matter:
- colour: the library is RGB throughout; SyncTalk_2D feeds BGR. The converter permutes the
  first and last convolutions so a converted model computes exactly what the original does.
- any width and any image side divisible by 32: the audio branch always ends at 10×10 (its
  input shapes are fixed by the features), so for other sides its output is resized to the
  image bottleneck; at 320 px nothing is resized and the structure is the reference's.
- `.reshape` instead of `.view` and no device calls, so channels_last, bf16 autocast and any
  device work as they are.

Building blocks: MobileNetV2 inverted residuals (Sandler et al. 2018, arXiv:1801.04381) in a
U-Net (Ronneberger et al. 2015, arXiv:1505.04597). Shape comments are for `hd328` with `ave`
audio: S = 320, channels (32, 64, 128, 256, 512).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config, ModelConfig

AUDIO_WINDOW = 16  # feature frames per video frame: index - 8 .. index + 7, as SyncTalk_2D
STAGES = 5  # stride-2 stages: the bottleneck is S / 32
EXPAND = 2  # inverted-residual expansion ratio of SyncTalk_2D (MobileNetV2 uses 6)
AUDIO_SIDE = 10  # the audio branch's output side: the bottleneck of a 320 px image


@dataclass(frozen=True)
class AudioMode:
    """How one kind of audio feature enters the network."""

    shape: tuple[int, int, int]  # (C, H, W) the (16, F) window is reshaped into
    entry: tuple[int, int]  # widths of the two entry blocks, as indices into `channels`
    stride: tuple[int, int]  # stride of the conv that brings (H, W) to 16×16


AUDIO_MODES: dict[str, AudioMode] = {
    # 16 frames × 512 AVE (lip-sync expert audio encoder) features
    "ave": AudioMode(shape=(32, 16, 16), entry=(1, 2), stride=(1, 1)),
    # 16 frames × 2 HuBERT frames (50 Hz) × 1024 features
    "hubert": AudioMode(shape=(32, 32, 32), entry=(1, 2), stride=(2, 2)),
    # 16 frames × 8192 WeNet features (SyncTalk_2D runs wenet at 20 fps)
    "wenet": AudioMode(shape=(256, 16, 32), entry=(3, 3), stride=(1, 2)),
    # 16 frames × 2 Whisper frames (50 Hz) × 384 (tiny, one layer): (48, 16, 16); other
    # Whisper sizes and layer counts give other widths (`model.audio_dim` / 16 channels)
    "whisper": AudioMode(shape=(48, 16, 16), entry=(1, 2), stride=(1, 1)),
}
SIZED_MODES = ("whisper",)  # modes whose per-frame feature size comes from model.audio_dim

# BGR <-> RGB of the 6 input channels (reference triplet, masked triplet) and of the 3 outputs
_SWAP_INPUT = [2, 1, 0, 5, 4, 3]
_SWAP_OUTPUT = [2, 1, 0]


def _audio_mode(mode: str, dim: int = 0) -> AudioMode:
    """The mode's layout; for a sized mode (whisper) with `dim` features per frame, the
    window becomes (dim / 16, 16, 16), which the entry block widens like any other."""
    if mode not in AUDIO_MODES:
        raise ValueError(f"unknown audio_mode {mode!r}; choose one of {sorted(AUDIO_MODES)}")
    spec = AUDIO_MODES[mode]
    if dim and mode in SIZED_MODES:
        if dim % 16:
            raise ValueError(f"audio_mode {mode!r} needs a per-frame feature size divisible "
                             f"by 16, got {dim}")
        return dataclasses.replace(spec, shape=(dim // 16, 16, 16))
    return spec


def audio_feature_shape(mode: str, dim: int = 0) -> tuple[int, int, int]:
    """(C, H, W) of one audio input for `mode`: ave (32, 16, 16), hubert (32, 32, 32),
    wenet (256, 16, 32), whisper (dim / 16, 16, 16) (tiny, one layer: 48)."""
    return _audio_mode(mode, dim).shape


def context_mask(shape: tuple[int, int, int], context: int) -> torch.Tensor | None:
    """(C, H, W) ones where the input holds feature frames within `context` of the window's
    centre (index AUDIO_WINDOW // 2), zeros elsewhere; None when every frame is kept.

    Why: with a minute of video the 16-frame window (0.64 s) is more than the audio needs
    and enough to memorise: a linear read-out of Whisper features predicted a held-out
    mouth opening at r 0.78-0.81 from +-2 frames and 0.71-0.74 from +-8 (docs/real_footage.md).
    The input keeps its shape, so checkpoints, ONNX and SyncTalk_2D's layout are unchanged.
    Frames follow one another in `audio_window_to_input`'s row-major layout.
    """
    centre = AUDIO_WINDOW // 2
    if not 0 <= context <= centre:
        raise ValueError(f"model.audio_context must lie in 0..{centre} feature frames either "
                         f"side of the video frame, got {context}")
    if context == centre:
        return None
    frames = torch.arange(AUDIO_WINDOW).repeat_interleave(math.prod(shape) // AUDIO_WINDOW)
    return ((frames - centre).abs() <= context).float().view(shape)


def audio_window_to_input(window: torch.Tensor, mode: str) -> torch.Tensor:
    """Reshape a window of per-video-frame features into the generator's audio input.

    The window holds AUDIO_WINDOW (16) consecutive feature frames centred on the video frame
    (index - 8 .. index + 7; SyncTalk_2D zero-pads at the ends). Its values are laid out
    row-major, frame after frame, then cut into the mode's (C, H, W): for `ave` 16 × 512 →
    (32, 16, 16), i.e. each audio channel holds half of one frame's 512 features.

    window: (B, 16, F) or (B, 16, ...) float32 features; F (or the product of the trailing
        dims) must be 512 for ave, 2048 (2 × 1024) for hubert, 8192 for wenet.
    Returns (B, *audio_feature_shape(mode)), same dtype and device.
    """
    if window.ndim < 3 or window.shape[1] != AUDIO_WINDOW:
        raise ValueError(
            f"expected a (B, {AUDIO_WINDOW}, F) window of audio features, got "
            f"{tuple(window.shape)}"
        )
    per_frame = math.prod(window.shape[2:])
    shape = audio_feature_shape(mode, per_frame if mode in SIZED_MODES else 0)
    expected = shape[0] * shape[1] * shape[2] // AUDIO_WINDOW
    if per_frame != expected:
        raise ValueError(
            f"audio_mode {mode!r} expects {expected} features per frame, got {per_frame} "
            f"(window {tuple(window.shape)}); per-frame sizes: ave 512, hubert 2048, wenet 8192, "
            "whisper a multiple of 16"
        )
    return window.reshape(window.shape[0], *shape)


# ------------------------------------------------------------------------------------------
# blocks


class ConvBN(nn.Module):
    """Convolution + batch norm, optionally followed by ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int = 1,
        stride: int | tuple[int, int] = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _batch_norm(self.bn, self.conv(x))
        # in place: batch norm's backward needs its input, not its output (saves a pass)
        return F.relu(x, inplace=True) if self.relu else x


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """`bn(x)`, when training in the standard layout for a channels_last CPU tensor whose width
    is not a multiple of 8: ATen's channels_last batch-norm kernels vectorise over channels and
    fall to a scalar path there (C = 12 or 4: 3-7x slower a value; the copies cost less).
    In eval mode batch norm is a cheap affine map and the copies would cost more than it."""
    if (bn.training and x.device.type == "cpu" and x.shape[1] % 8 and x.ndim == 4
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
        return bn(x.contiguous()).contiguous(memory_format=torch.channels_last)
    return bn(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand, 3×3 depthwise (carries the stride), linear 1×1 project.

    The identity is added whenever input and output shapes agree (stride 1, same width),
    which is exactly where SyncTalk_2D adds it.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        hidden = cin * EXPAND
        self.expand = ConvBN(cin, hidden)
        self.depthwise = ConvBN(hidden, hidden, 3, stride, padding=1, groups=hidden)
        self.project = ConvBN(hidden, cout, relu=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class DoubleBlock(nn.Module):
    """Two inverted residuals: the first changes width (and, with stride 2, halves the side),
    the second refines at the new width with an identity path."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.first = InvertedResidual(cin, cout, stride)
        self.second = InvertedResidual(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))


class UpBlock(nn.Module):
    """Bilinear ×2 upsampling, concatenation with the encoder's skip, then a double block."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.block = DoubleBlock(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.block(torch.cat([x, skip], dim=1))


class AudioEncoder(nn.Module):
    """Maps one audio input (C_a, H_a, W_a) to (c4, 10, 10) for the bottleneck.

    Entry blocks widen the features, a 3×3 conv (mode-dependent stride) brings them to
    16×16 at width c3, a stride-2 conv with padding 3 to 10×10 at width c4, and inverted
    residuals mix in between.
    """

    def __init__(self, mode: str, channels: tuple[int, ...], dim: int = 0) -> None:
        super().__init__()
        spec = _audio_mode(mode, dim)
        c = channels
        w1, w2 = c[spec.entry[0]], c[spec.entry[1]]
        self.entry1 = InvertedResidual(spec.shape[0], w1)
        self.entry2 = InvertedResidual(w1, w2)
        self.squeeze = ConvBN(w2, c[3], 3, spec.stride, padding=1, bias=True)
        self.mix = InvertedResidual(c[3], c[3])
        self.down = ConvBN(c[3], c[4], 3, stride=2, padding=3, bias=True)
        self.out1 = InvertedResidual(c[4], c[4])
        self.out2 = InvertedResidual(c[4], c[4])

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        a = self.entry1(a)  # (B, 64, 16, 16)
        a = self.entry2(a)  # (B, 128, 16, 16)
        a = self.squeeze(a)  # (B, 256, 16, 16)
        a = self.mix(a)  # (B, 256, 16, 16)
        a = self.down(a)  # (B, 512, 10, 10)
        return self.out2(self.out1(a))  # (B, 512, 10, 10)


class FrameProjection(nn.Module):
    """Maps each of the window's 16 feature frames to `dim` numbers with one shared linear
    map, and lays them out as (dim, 16, 16): channel = projected feature, row = frame
    (repeated along the columns, so the audio branch's 3×3 convs mix neighbouring frames).

    Why: in the row-major layout a frame's features are cut into rows, and the convs mix
    them by index, so the branch has no easy way to a linear read-out of the whole frame,
    which is what predicts the mouth opening best (r 0.78-0.81 on a held-out tail). No bias:
    frames zeroed by the context mask stay zero.
    """

    def __init__(self, features: int, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"model.audio_project must be 0 (off) or a positive size, got {dim}")
        self.features = features
        self.linear = nn.Linear(features, dim, bias=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio.reshape(audio.shape[0], AUDIO_WINDOW, self.features)  # (B, 16, F)
        code = self.linear(frames).transpose(1, 2)  # (B, D, 16)
        return code.unsqueeze(-1).expand(-1, -1, -1, AUDIO_WINDOW)  # (B, D, 16, 16)


# ------------------------------------------------------------------------------------------
# the network


class Generator(nn.Module):
    """U-Net 328 generator of SyncTalk_2D with its audio branch at the bottleneck.

    Encoder: a stride-1 stem to c0, five stride-2 double blocks (S → S/32) to widths
    c0, c1, c2, c3, c4. The audio branch's (c4, S/32, S/32) is concatenated with the image
    bottleneck and fused to c3 by two double blocks. Decoder: five bilinear ups, each
    concatenating the matching encoder output; a 1×1 conv to RGB and a sigmoid.
    """

    def __init__(
        self,
        audio_mode: str = "ave",
        channels: tuple[int, ...] = (32, 64, 128, 256, 512),
        image_size: int = 320,
        audio_dim: int = 0,
        audio_context: int = AUDIO_WINDOW // 2,
        audio_project: int = 0,
    ) -> None:
        super().__init__()
        self.audio_shape = audio_feature_shape(audio_mode, audio_dim)
        if len(channels) != STAGES or min(channels) < 2:
            raise ValueError(
                f"model.channels needs {STAGES} widths of at least 2 (one per stride-2 stage), "
                f"got {tuple(channels)}; e.g. 32,64,128,256,512 (hd328) or 16,32,64,128,256"
            )
        side = 2**STAGES
        if image_size % side:
            raise ValueError(
                f"model.image_size {image_size} is not divisible by {side} (five stride-2 "
                f"stages); use e.g. {side * max(1, round(image_size / side))}"
            )
        self.audio_mode = audio_mode
        self.channels = tuple(channels)
        self.image_size = image_size
        c = self.channels

        self.stem = InvertedResidual(6, c[0])
        widths = (c[0], *c)  # the first down keeps the stem's width
        self.downs = nn.ModuleList(DoubleBlock(widths[i], widths[i + 1], 2) for i in range(5))
        if audio_project:
            per_frame = math.prod(self.audio_shape) // AUDIO_WINDOW
            self.project: FrameProjection | None = FrameProjection(per_frame, audio_project)
            # the projected layout enters like whisper's: two entry blocks, no stride
            self.audio = AudioEncoder("whisper", c, audio_project * AUDIO_WINDOW)
        else:
            self.project = None
            self.audio = AudioEncoder(audio_mode, c, audio_dim)
        self.fuse = nn.Sequential(DoubleBlock(2 * c[4], c[4]), DoubleBlock(c[4], c[3]))
        # decoder widths: halve on the way up, except a full-width stage at S/2
        skips = (c[3], c[2], c[1], c[0], c[0])
        outs = (c[3] // 2, c[2] // 2, c[1] // 2, c[0], c[0] // 2)
        ins = (c[3], *outs[:-1])
        self.ups = nn.ModuleList(UpBlock(ins[i] + skips[i], outs[i]) for i in range(5))
        self.head = nn.Conv2d(outs[-1], 3, 1)
        self.audio_gain = 1.0  # see set_audio_gain
        self.register_buffer("audio_pivot", None, persistent=False)
        self.register_buffer("audio_window_mask", context_mask(self.audio_shape, audio_context),
                             persistent=False)

    @torch.no_grad()
    def start_at_colour(self, rgb: Sequence[float]) -> None:
        """Make a fresh model output `rgb` (mean colour in [0, 1]) instead of sigmoid(0) grey.

        Why: the output bias moves about lr per Adam step, so from grey a skin tone takes
        hundreds of steps to reach, and a short CPU run ends with a colour cast.
        """
        p = torch.as_tensor(rgb, dtype=self.head.bias.dtype).clamp(0.02, 0.98)
        self.head.bias.copy_(torch.log(p / (1 - p)))

    @torch.no_grad()
    def audio_latent(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, c4, 10, 10): what the audio branch makes of (B, *audio_shape) features."""
        return self._audio_code(audio)

    def _audio_code(self, audio: torch.Tensor) -> torch.Tensor:
        if self.audio_window_mask is not None:
            audio = audio * self.audio_window_mask
        if self.project is not None:
            audio = self.project(audio)
        return self.audio(audio)

    def set_audio_gain(self, gain: float, pivot: torch.Tensor | None = None) -> None:
        """Scale the audio branch's output away from `pivot` ((1, c4, 10, 10), e.g. the
        `audio_latent` of a closed mouth's audio) by `gain` from now on; 1 = off.

        Why: a generator trained with an L1 loss draws the average of the mouths an audio
        window leaves possible, which opens less than the person did; moving the audio
        code further from the closed mouth's widens the opening while a pause (the pivot
        itself) stays closed (docs/real_footage.md). The pivot is a non-persistent buffer:
        checkpoints do not change, an ONNX export carries it as a constant.
        """
        if not 0 < gain <= 4:
            raise ValueError(f"the audio gain (infer.mouth_gain) must lie in (0, 4], got {gain}")
        if gain != 1 and pivot is None:
            raise ValueError("an audio gain other than 1 needs the pivot latent")
        self.audio_gain = float(gain)
        if gain == 1:
            self.audio_pivot = None
            return
        ref = next(self.parameters())
        self.audio_pivot = pivot.detach().to(ref.device, ref.dtype)

    @classmethod
    def from_config(cls, cfg: ModelConfig | Config) -> Generator:
        """Build from `cfg.model` (or a ModelConfig)."""
        m = cfg.model if isinstance(cfg, Config) else cfg
        return cls(m.audio_mode, m.channels, m.image_size, m.audio_dim, m.audio_context,
                   m.audio_project)

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """Complete the masked crop.

        x: (B, 6, S, S) float32 in [0, 1], RGB; ch 0-2 reference crop, 3-5 masked target
            crop; S divisible by 32 (normally `image_size`).
        audio: (B, *audio_feature_shape(audio_mode)) float32 features, see
            `audio_window_to_input`.
        Returns (B, 3, S, S) in [0, 1], RGB (bfloat16 under bf16 autocast).
        """
        self._check_inputs(x, audio)
        x1 = self._stem(x)  # (B, 32, 320, 320)
        x2 = self.downs[0](x1)  # (B, 32, 160, 160)
        x3 = self.downs[1](x2)  # (B, 64, 80, 80)
        x4 = self.downs[2](x3)  # (B, 128, 40, 40)
        x5 = self.downs[3](x4)  # (B, 256, 20, 20)
        x6 = self.downs[4](x5)  # (B, 512, 10, 10)
        a = self._audio_code(audio)  # (B, 512, 10, 10)
        if self.audio_pivot is not None:
            a = self.audio_pivot + self.audio_gain * (a - self.audio_pivot)
        if a.shape[-2:] != x6.shape[-2:]:
            a = _resize(a, (int(x6.shape[-2]), int(x6.shape[-1])))  # only when S != 320
        x6 = self.fuse(torch.cat([x6, a], dim=1))  # (B, 256, 10, 10)
        y = self.ups[0](x6, x5)  # (B, 128, 20, 20)
        y = self.ups[1](y, x4)  # (B, 64, 40, 40)
        y = self.ups[2](y, x3)  # (B, 32, 80, 80)
        y = self.ups[3](y, x2)  # (B, 32, 160, 160)
        y = self.ups[4](y, x1)  # (B, 16, 320, 320)
        return torch.sigmoid(self.head(y))  # (B, 3, 320, 320)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem in the standard layout when training on CPU: its hidden width, 12
        (6 × EXPAND), is what ATen's channels_last kernels handle worst (see `_batch_norm`);
        run there it needs no layout copies either, about 7 % of a `cpu` training step.
        (Inference is a little faster all in channels_last.)"""
        if not self.training or x.device.type != "cpu" or x.is_contiguous():
            return self.stem(x)
        return self.stem(x.contiguous()).contiguous(memory_format=torch.channels_last)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Generator:
        """After any `.to(...)`, give the stem's kernels standard strides again.

        `.to(memory_format=torch.channels_last)` restrides even 1×1 and depthwise kernels,
        and a convolution with a channels_last kernel returns channels_last output whatever
        its input's layout; `_stem` needs the standard one. Same memory, new strides.
        """
        super()._apply(fn, recurse)
        for p in self.stem.parameters():
            # only when restrided: a clone would, e.g., undo `share_memory()`
            if p.ndim == 4 and p.stride() != tuple(math.prod(p.shape[i + 1:]) for i in range(4)):
                p.data = p.data.clone(memory_format=torch.contiguous_format)
        return self

    def _check_inputs(self, x: torch.Tensor, audio: torch.Tensor) -> None:
        side = 2**STAGES
        if x.ndim != 4 or x.shape[1] != 6 or x.shape[2] % side or x.shape[3] % side:
            raise ValueError(
                f"expected x of shape (B, 6, S, S) with S divisible by {side}, got "
                f"{tuple(x.shape)}"
            )
        expected = self.audio_shape
        if tuple(audio.shape[1:]) != expected or audio.shape[0] != x.shape[0]:
            raise ValueError(
                f"audio_mode {self.audio_mode!r} expects audio of shape (B, {expected[0]}, "
                f"{expected[1]}, {expected[2]}) with B = {x.shape[0]}, got "
                f"{tuple(audio.shape)}; reshape windows with audio_window_to_input"
            )


def _resize(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average down (or bilinearly up) the audio map to the image bottleneck's side."""
    if size[0] <= a.shape[-2] and size[1] <= a.shape[-1]:
        return F.adaptive_avg_pool2d(a, size)
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)


def count_parameters(model: nn.Module) -> int:
    """Number of learnable values (BatchNorm running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------
# SyncTalk_2D checkpoints

# our state-dict names -> SyncTalk_2D's, applied in order (the first match of each rule)
_REFERENCE_NAMES = [
    (r"^stem\.", "inc.inconv.0."),
    (r"^downs\.(\d)\.", lambda m: f"down{int(m[1]) + 1}.maxpool_conv.0."),
    (r"^ups\.(\d)\.block\.", lambda m: f"up{int(m[1]) + 1}.conv."),
    (r"^fuse\.", "fuse_conv."),
    (r"^head\.", "outc.conv."),
    (r"^audio\.entry1\.", "audio_model.conv1."),
    (r"^audio\.entry2\.", "audio_model.conv2."),
    (r"^audio\.squeeze\.conv\.", "audio_model.conv3."),
    (r"^audio\.squeeze\.bn\.", "audio_model.bn3."),
    (r"^audio\.mix\.", "audio_model.conv4."),
    (r"^audio\.down\.conv\.", "audio_model.conv5."),
    (r"^audio\.down\.bn\.", "audio_model.bn5."),
    (r"^audio\.out1\.", "audio_model.conv6."),
    (r"^audio\.out2\.", "audio_model.conv7."),
    (r"\.first\.", ".double_conv.0."),
    (r"\.second\.", ".double_conv.1."),
    (r"\.expand\.conv\.", ".conv.0."),
    (r"\.expand\.bn\.", ".conv.1."),
    (r"\.depthwise\.conv\.", ".conv.3."),
    (r"\.depthwise\.bn\.", ".conv.4."),
    (r"\.project\.conv\.", ".conv.6."),
    (r"\.project\.bn\.", ".conv.7."),
]
_FIRST_CONV = "stem.expand.conv.weight"
_OUTPUT_CONV = ("head.weight", "head.bias")


def reference_name(key: str) -> str:
    """SyncTalk_2D's state-dict name of one of our keys, e.g.
    `downs.2.second.depthwise.bn.weight` -> `down3.maxpool_conv.0.double_conv.1.conv.4.weight`."""
    for pattern, repl in _REFERENCE_NAMES:
        key = re.sub(pattern, repl, key, count=1)
    return key


def _swap_colours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Permute BGR <-> RGB where colour enters and leaves (its own inverse)."""
    out = dict(state)
    out[_FIRST_CONV] = state[_FIRST_CONV][:, _SWAP_INPUT]
    for key in _OUTPUT_CONV:
        out[key] = state[key][_SWAP_OUTPUT]
    return out


def to_synctalk2d_state_dict(model: Generator) -> dict[str, torch.Tensor]:
    """Our weights under SyncTalk_2D's names and BGR channel order, loadable by its
    `Model(6, mode).load_state_dict` when the model is `hd328`-shaped."""
    state = _swap_colours(model.state_dict())
    return {reference_name(k): v.detach().clone() for k, v in state.items()}


def _reference_layout(state: Mapping[str, torch.Tensor]) -> str:
    """What a SyncTalk_2D state dict was built with, for error messages."""
    parts = []
    entry = state.get("audio_model.conv1.conv.0.weight")
    if entry is not None:
        cin = entry.shape[1]
        modes = [m for m, spec in AUDIO_MODES.items() if spec.shape[0] == cin]
        parts.append(f"audio_mode {' or '.join(repr(m) for m in modes) or '?'} "
                     f"(its audio branch takes {cin} channels)")
    widths = []
    for i in range(1, STAGES + 1):
        bn = state.get(f"down{i}.maxpool_conv.0.double_conv.1.conv.7.weight")
        widths.append(str(bn.shape[0]) if bn is not None else "?")
    parts.append(f"model.channels={','.join(widths)}")
    return "the checkpoint has " + ", ".join(parts)


def load_synctalk2d_checkpoint(
    model: Generator, path_or_state_dict: str | Path | Mapping[str, torch.Tensor]
) -> Generator:
    """Load SyncTalk_2D `Model(6, mode)` weights (`unet_328.py`) into `model`, in place.

    Names are mapped to ours and colour order is converted: SyncTalk_2D feeds BGR and
    produces BGR, so the first conv's input channels (both triplets) and the output conv's
    channels are permuted; for the same picture, ours given RGB returns exactly its output in
    RGB. `ave` and `hubert` checkpoints have identical shapes, so the mode must come from how
    the checkpoint was trained (SyncTalk_2D's `--asr`); `wenet` is told apart by its shapes.

    path_or_state_dict: a `.pth` file saved by SyncTalk_2D (`torch.save(net.state_dict())`)
        or the state dict itself; a `module.` prefix (DataParallel) is accepted.
    Returns the model. Raises KeyError / ValueError naming the offending key and the
    audio_mode / channels the checkpoint needs.
    """
    if isinstance(path_or_state_dict, (str, Path)):
        state = torch.load(path_or_state_dict, map_location="cpu", weights_only=True)
    else:
        state = path_or_state_dict
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ours = model.state_dict()
    names = {reference_name(k): k for k in ours}
    hint = (f"{_reference_layout(state)}; the model is audio_mode {model.audio_mode!r}, "
            f"model.channels={','.join(map(str, model.channels))} (preset hd328 = "
            "32,64,128,256,512)")
    if "inc.inconv.0.conv.0.weight" not in state:
        raise KeyError(
            f"not a SyncTalk_2D unet_328 state dict: no 'inc.inconv.0.conv.0.weight' "
            f"(first keys: {list(state)[:3]})"
        )
    missing = [k for k in names if k not in state]
    unexpected = [k for k in state if k not in names]
    if missing or unexpected:
        raise KeyError(
            f"checkpoint does not match: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
            f", unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}; {hint}"
        )
    converted = {}
    for ref_key, key in names.items():
        value = state[ref_key]
        if value.shape != ours[key].shape:
            raise ValueError(
                f"checkpoint key {ref_key!r} has shape {tuple(value.shape)}, the model's "
                f"{key!r} needs {tuple(ours[key].shape)}; {hint}"
            )
        converted[key] = value
    model.load_state_dict(_swap_colours(converted))
    return model
