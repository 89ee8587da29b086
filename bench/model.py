"""Generator cost per preset: parameters, GFLOP per frame, forward and training-step time.

Forward ms per frame at batch 1 and 8 for three variants: eager fp32 NCHW (what SyncTalk_2D's
inference does), channels_last, and bf16 autocast + channels_last; plus one training step
(batch 8, forward + L1 backward + Adam, eager fp32). The machine is noisy, so every case runs
once per round, round after round, and the median is kept; compare speeds as the ratios of one
run. FLOPs count a multiply and an add as two (torch FlopCounterMode: convolutions only, which
is where SyncTalk_2D's 9.77 GFLOP/frame comes from); a training step is 3x the forward (input
and weight gradients each cost one forward; FlopCounterMode over-counts depthwise backward).
Writes JSON to outputs/bench/model.json and prints a table.

    .venv/bin/python bench/model.py [--presets tiny cpu hd328] [--rounds 5] [--threads 1]

On a busy machine use --threads 1: with 2 OpenMP threads on 2 loaded cores, small models ran
5-40x slower and the ratios stopped meaning anything. bf16 autocast only pays on CPUs with
native bf16 (avx512_bf16 / AMX); on AVX2 torch falls back to a per-group slow convolution.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from synctalk_lib.config import get_config
from synctalk_lib.unet import Generator, audio_feature_shape, count_parameters

VARIANTS = ("fp32_nchw", "channels_last", "bf16_channels_last")
BATCHES = (1, 8)
TRAIN_BATCH = 8
MIN_CASE_S = 0.2  # fast cases repeat within a round until they take about this long


def inputs(model: Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    side = model.image_size
    x = torch.rand(batch, 6, side, side, device=next(model.parameters()).device)
    audio = torch.randn(batch, *audio_feature_shape(model.audio_mode), device=x.device)
    return x, audio


def gflop_per_frame(preset: str) -> float:
    """Forward GFLOP of one frame, counted on the meta device (no computation)."""
    with torch.device("meta"):
        model = Generator.from_config(get_config(preset))
        x, audio = inputs(model, 1)
    with FlopCounterMode(display=False) as counter:
        model(x, audio)
    return counter.get_total_flops() / 1e9


def forward_case(model: Generator, batch: int, variant: str) -> Callable[[], torch.Tensor]:
    model = copy.deepcopy(model).eval()
    x, audio = inputs(model, batch)
    if variant != "fp32_nchw":
        model = model.to(memory_format=torch.channels_last)
        x = x.to(memory_format=torch.channels_last)
    bf16 = variant == "bf16_channels_last"

    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            return model(x, audio)

    return run


def train_case(model: Generator) -> Callable[[], float]:
    model = copy.deepcopy(model).train()
    x, audio = inputs(model, TRAIN_BATCH)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run() -> float:
        loss = F.l1_loss(model(x, audio), x[:, :3])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return run


def measure(cases: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of every case, interleaved round-robin."""
    repeats = {}
    for name, fn in cases.items():  # warm-up, and how many calls make one timed sample
        start = time.perf_counter()
        fn()
        repeats[name] = max(1, round(MIN_CASE_S / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(repeats[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / repeats[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def bf16_max_error(model: Generator) -> float:
    """Largest output difference (0-1 scale) of bf16 autocast vs fp32 on random input."""
    outputs = []
    for variant in ("fp32_nchw", "bf16_channels_last"):
        torch.manual_seed(0)  # the same input for both
        outputs.append(forward_case(model, 1, variant)().float())
    return (outputs[0] - outputs[1]).abs().max().item()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "cpu", "hd328"])
    parser.add_argument("--mode", default="ave", help="audio_mode of every model")
    parser.add_argument("--rounds", type=int, default=5, help="forward rounds (median)")
    parser.add_argument("--train-rounds", type=int, default=3, help="training-step rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "model.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    models = {p: Generator.from_config(get_config(p, {"model.audio_mode": args.mode}))
              for p in args.presets}
    forward = {f"{p}/{v}/{b}": forward_case(m, b, v)
               for p, m in models.items() for v in VARIANTS for b in BATCHES}
    train = {p: train_case(m) for p, m in models.items()}
    forward_s = measure(forward, args.rounds)
    train_s = measure(train, args.train_rounds)

    result: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": len(os.sched_getaffinity(0)), "threads": args.threads,
                    "load_avg": os.getloadavg()},
        "audio_mode": args.mode, "rounds": args.rounds, "train_rounds": args.train_rounds,
        "presets": {},
    }
    for p, model in models.items():
        gflop = gflop_per_frame(p)
        result["presets"][p] = {
            "channels": list(model.channels), "image_size": model.image_size,
            "params": count_parameters(model),
            "gflop_per_frame": round(gflop, 3),
            "train_gflop_per_step": round(3 * gflop * TRAIN_BATCH, 1),
            "forward_ms_per_frame": {
                v: {str(b): round(1e3 * forward_s[f"{p}/{v}/{b}"] / b, 2) for b in BATCHES}
                for v in VARIANTS
            },
            "train_step_ms": round(1e3 * train_s[p], 1),
            "bf16_max_abs_error": round(bf16_max_error(model), 4),
        }
    presets = result["presets"]
    base = "hd328" if "hd328" in presets else args.presets[-1]
    ref = presets[base]["forward_ms_per_frame"]["fp32_nchw"]["1"]
    result["speedup_vs_fp32_nchw_batch1"] = {
        p: {f"{v}/{b}": round(ref / presets[p]["forward_ms_per_frame"][v][str(b)], 2)
            for v in VARIANTS for b in BATCHES}
        for p in presets
    }
    result["speedup_reference"] = f"{base} eager fp32 NCHW batch 1"
    result["train_flop_ratio_vs"] = {
        p: round(presets[base]["train_gflop_per_step"] / presets[p]["train_gflop_per_step"], 1)
        for p in presets
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    report(result, base)
    print(f"wrote {args.out}")
    return 0


def report(result: dict, base: str) -> None:
    m = result["machine"]
    print(f"generator, audio_mode {result['audio_mode']}, torch {m['torch']}, {m['threads']} "
          f"threads on {m['cpus']} cpus, load {m['load_avg'][0]:.1f}; ms per frame "
          f"(median of {result['rounds']} round-robin rounds)")
    head = "".join(f"{v + ' b' + str(b):>23}" for v in VARIANTS for b in BATCHES)
    print(f"{'preset':<7}{'params':>11}{'GFLOP':>8}{head}{'train b8 ms':>13}{'xFLOP':>7}")
    for p, r in result["presets"].items():
        cells = "".join(f"{r['forward_ms_per_frame'][v][str(b)]:>23.2f}"
                        for v in VARIANTS for b in BATCHES)
        print(f"{p:<7}{r['params']:>11,}{r['gflop_per_frame']:>8.2f}{cells}"
              f"{r['train_step_ms']:>13.0f}{result['train_flop_ratio_vs'][p]:>7.1f}")
    print(f"speed-up vs {result['speedup_reference']} (higher is faster):")
    for p, s in result["speedup_vs_fp32_nchw_batch1"].items():
        cells = "".join(f"{s[f'{v}/{b}']:>23.2f}" for v in VARIANTS for b in BATCHES)
        print(f"{p:<26}{cells}")
    errors = ", ".join(f"{p} {r['bf16_max_abs_error']}" for p, r in result["presets"].items())
    print(f"bf16 autocast max |error| vs fp32 (0-1 scale, random weights): {errors}")


if __name__ == "__main__":
    sys.exit(main())
