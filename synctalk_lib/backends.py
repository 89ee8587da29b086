"""Where the generator runs at inference: PyTorch (CPU/CUDA) or ONNX Runtime.

Both take and return numpy arrays so the renderer does not care which one it has. On CPU,
ONNX Runtime runs the U-Net 3-10x faster than eager PyTorch (docs/design.md §9), so "auto" picks
it when onnxruntime is installed and no GPU is present; the exported file is cached next to
the checkpoint and keyed on its contents.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from . import files, unet
from .config import Config
from .device import pick_device

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")


class BackendError(RuntimeError):
    """The requested backend cannot run here (missing package, bad export)."""


class TorchBackend:
    """Eager PyTorch, channels_last, inference_mode; AMP is not used (fp16 is slow on CPU)."""

    name = "torch"

    def __init__(self, model: unet.Generator, device: str | torch.device | None = None) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)

    def __call__(self, x: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """x: (B, 6, S, S) float32 [0, 1]; audio: (B, *feature shape). Returns (B, 3, S, S)."""
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
            y = self.model(xt, torch.from_numpy(audio).to(self.device))
            return y.float().cpu().numpy()

    def describe(self) -> str:
        return f"torch on {self.device}"


class OnnxBackend:
    """ONNX Runtime on CPU for any exported network (max diff vs PyTorch ~1e-7 in testing).

    Called with numpy arrays in the order of the export's inputs; returns the first output.
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        feed = {name: np.ascontiguousarray(a, np.float32)
                for name, a in zip(self.inputs, arrays, strict=True)}
        return self.session.run(None, feed)[0]

    def describe(self) -> str:
        return f"onnxruntime (CPU, {self.session.get_session_options().intra_op_num_threads} "\
               "threads)"


Backend = TorchBackend | OnnxBackend


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError("backend 'onnx' needs onnxruntime: pip install onnxruntime") from exc
    return onnxruntime


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                path: str | os.PathLike) -> Path:
    """Write `model` as ONNX (opset 17, dynamic batch), atomically.

    inputs: example tensors by input name (batch of 1); the output is named "y".
    """
    try:
        import onnx  # noqa: F401
    except ImportError as exc:
        raise BackendError("exporting to ONNX needs the onnx package: pip install "
                           "'onnx<1.18' (newer onnx needs protobuf 6, mediapipe needs 4)") from exc
    model = model.to("cpu").eval()
    axes = {name: {0: "batch"} for name in [*inputs, "y"]}
    with files.atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape checks that are constant here
        torch.onnx.export(model, tuple(inputs.values()), str(tmp), dynamo=False,
                          opset_version=17, input_names=list(inputs), output_names=["y"],
                          dynamic_axes=axes)
    return Path(path)


def cached_onnx(model: torch.nn.Module, inputs: dict[str, torch.Tensor], source: Path,
                tag: str) -> OnnxBackend:
    """`model` (whose weights come from checkpoint file `source`) as an ONNX Runtime session.

    The export lives in <source folder>/onnx/ named after the source's digest, so retraining
    never runs a stale file.
    """
    target = source.parent / "onnx" / f"{tag}-{files.file_digest(source)[:16]}.onnx"
    if not target.is_file():
        log.info("exporting %s (%s) to %s", tag, source.name, target)
        export_onnx(model, inputs, target)
    return OnnxBackend(target)


def generator_inputs(cfg: Config) -> dict[str, torch.Tensor]:
    size = cfg.model.image_size
    return {"x": torch.zeros(1, 6, size, size),
            "audio": torch.zeros(1, *unet.audio_feature_shape(cfg.model.audio_mode, cfg.model.audio_dim))}


def choose(backend: str, device: torch.device) -> str:
    """Resolve "auto": torch on CUDA, else onnx if installed, else torch."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "onnx" if device.type == "cpu" and onnx_available() else "torch"
    return backend


def make_backend(model: unet.Generator, cfg: Config, checkpoint: str | os.PathLike,
                 backend: str = "auto", device: str | None = None,
                 tag: str | None = None) -> Backend:
    """The generator on the backend asked for ("auto" = fastest available, see `choose`).
    tag: the ONNX export's name (default: the checkpoint's stem); a model changed after
    loading (e.g. an audio gain) needs its own."""
    dev = pick_device(device)
    backend = choose(backend, dev)
    if backend == "torch":
        return TorchBackend(model, dev)
    if dev.type != "cpu":
        log.warning("backend 'onnx' runs on CPU here (device %s ignored)", dev)
    return cached_onnx(model, generator_inputs(cfg), Path(checkpoint), tag or Path(checkpoint).stem)
