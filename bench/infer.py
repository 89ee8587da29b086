"""End-to-end inference speed (decode → model → paste → encode) and peak memory.

Cases: presets `cpu` (on Whisper features when installed, as the library resolves it) and
`hd328` (randomly initialised: the cost is the same as trained), and `cpu+ave` (the `cpu`
preset on the mel audio encoder's features; `+whisper` forces Whisper) ×
backends onnx / torch × a 512×512 and a 1920×1080 source, each in its own process so its peak
RSS is its own. The baseline, measured in the same run on the same frames, re-creates the
SyncTalk_2D reference loop (docs/design.md §9): read each full frame from a JPEG, crop, run the
U-Net 328 eagerly in fp32 NCHW at batch 1, paste the whole crop back, write MJPG, then
re-encode to H.264 (x264 medium) with the audio. `ratio` = our frames/s ÷ the baseline's for
the same model and source; `x base` = a `+variant` case's frames/s ÷ its plain preset's
(`cpu+ave` against `cpu` on Whisper: what the Whisper encoder costs). A long-audio case checks that memory does not grow
with length.
Writes JSON (rows plus the machine: CPU, cores, date, load average at the start) to
bench/results/infer.json, which is committed; `scripts/bench_tables.py` makes the tables of
docs/benchmarks.md from it. Prints a table.

    .venv/bin/python bench/infer.py [--seconds 4] [--presets cpu hd328] [--sources 512 1080]
    .venv/bin/python bench/infer.py --only cpu-1080          # one preset and source, onnx,
                                                             # with its reference loop
    .venv/bin/python bench/infer.py --quick                  # cpu and hd328 at 512 and 1080,
                                                             # onnx, no long-audio check
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE_FPS = {"512": 3.2, "1080": 2.5}  # SyncTalk_2D end to end on this CPU (docs/design.md §9)


def bench_config(name: str):
    """A preset, or `<preset>+whisper` / `<preset>+ave`: the preset on those audio features
    (a plain preset resolves `auto` as the library does: Whisper when installed)."""
    from synctalk_lib import whisper
    from synctalk_lib.config import get_config

    preset, _, mode = name.partition("+")
    if mode not in ("", "whisper", "ave"):
        raise SystemExit(f"unknown preset variant {name!r}")
    cfg = get_config(preset, {"model.audio_mode": mode} if mode else None)
    if cfg.model.audio_mode == "whisper" and not cfg.model.audio_dim:
        dim = whisper.WhisperFeatures.load(cfg=cfg.whisper).dim
        cfg = cfg.override({"model.audio_dim": dim})
    return cfg


def machine() -> dict:
    """Where and when a benchmark ran: CPU model, cores, UTC date, load average at start."""
    import datetime
    import os
    import platform

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


# ----------------------------------------------------------------------------- set-up


def make_people(work: Path, presets: list[str], sources: list[str]) -> None:
    """Demo person at 512² and the same at 1080p; random-weight checkpoints per preset."""
    from synctalk_lib import checkpoint, demo, media, preprocess, syncnet, unet
    from synctalk_lib.config import get_config

    data = work / "dataset"
    paths = demo.make_demo(data, "p512", seconds=12, lead_silence=1.0)
    if "1080" in sources:
        (data / "p1080").mkdir(parents=True, exist_ok=True)
        media.run_ffmpeg(["-y", "-i", str(paths.video), "-vf",
                          "scale=1080:1080,pad=1920:1080:420:0", "-c:v", "libx264", "-crf",
                          "16", "-preset", "veryfast", "-c:a", "copy",
                          str(data / "p1080" / "p1080.mp4")])
    shutil.copy(paths.heldout_wav, work / "speech.wav")
    for src in sources:
        preprocess.preprocess(f"p{src}", root=data, cfg=get_config("cpu"), progress=False)
        for preset in presets:
            cfg = bench_config(preset)
            folder = work / "checkpoints" / f"{preset}" / f"p{src}"
            folder.mkdir(parents=True, exist_ok=True)
            checkpoint.save_checkpoint(folder / "syncnet.pt", kind=syncnet.CKPT_KIND,
                                       model=syncnet.SyncNet.from_config(cfg), cfg=cfg, step=0)
            checkpoint.save_checkpoint(folder / "generator_best.pt", kind="generator",
                                       model=unet.Generator.from_config(cfg), cfg=cfg, step=0)


def speech(work: Path, seconds: float) -> Path:
    """`seconds` of the demo's held-out speech (looped if needed) as a wav."""
    from synctalk_lib import media

    wav = media.load_audio(work / "speech.wav")
    first = int(np.argmax(np.abs(wav) > 0.05))
    wav = np.resize(wav[first:], int(seconds * 16000))
    out = work / f"speech_{seconds:g}s.wav"
    if not out.is_file():
        media.save_wav(out, wav, 16000)
    return out


# ----------------------------------------------------------------------------- cases


def run_ours(work: Path, preset: str, backend: str, source: str, seconds: float) -> dict:
    from synctalk_lib import infer

    avatar = infer.Avatar.load(f"p{source}", dataset_root=work / "dataset",
                               checkpoints_root=work / "checkpoints" / preset,
                               output_root=work / "outputs", backend=backend)
    audio = speech(work, seconds)
    avatar.render(speech(work, 1.0), work / "warmup.mp4", progress=False)  # caches, ORT warm-up
    start = time.perf_counter()
    result = avatar.render(audio, work / "out.mp4", progress=False)
    wall = time.perf_counter() - start
    return {"frames": result.n_frames, "seconds": round(wall, 2),
            "fps": round(result.n_frames / wall, 2), "backend": avatar.backend.describe()}


def run_reference(work: Path, preset: str, source: str, seconds: float) -> dict:
    """The SyncTalk_2D loop re-created: JPEG in, eager fp32 batch 1, MJPG, x264 re-encode."""
    import cv2
    import torch

    from synctalk_lib import dataset, media, unet

    cfg = bench_config(preset)
    ds = dataset.load_dataset(f"p{source}", work / "dataset")
    n = int(seconds * 25)
    jpgs = work / f"full_body_img_{source}"
    if not jpgs.is_dir():
        jpgs.mkdir()
        for i, frame in enumerate(ds.frames().iter_frames(0, n)):
            cv2.imwrite(str(jpgs / f"{i}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    model = unet.Generator.from_config(cfg).eval()
    boxes = ds.boxes().round().astype(int)
    dim = cfg.model.audio_dim or 512  # ave: 512 features a frame, as SyncTalk_2D's
    feats = np.random.default_rng(0).random((n, 16, dim), np.float32)
    size = cfg.model.image_size
    start = time.perf_counter()
    avi = work / "ref.avi"
    writer = None
    for i in range(n):
        img = cv2.imread(str(jpgs / f"{i}.jpg"))
        x0, y0, x1, y1 = boxes[i]
        crop = cv2.resize(img[y0:y1, x0:x1], (328, 328), interpolation=cv2.INTER_CUBIC)
        inner = crop[4:324, 4:324].copy()
        real = cv2.resize(inner, (size, size)) if size != 320 else inner
        masked = cv2.rectangle(real.copy(), (5, 5), (size - 5, size - 15), (0, 0, 0), -1)
        x = np.concatenate([real, masked], axis=2).transpose(2, 0, 1)[None].astype(np.float32)
        with torch.no_grad():
            pred = model(torch.from_numpy(x / 255.0).float(),
                         unet.audio_window_to_input(torch.from_numpy(feats[i:i + 1]),
                                                    cfg.model.audio_mode))
        out = (pred[0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        crop[4:324, 4:324] = cv2.resize(out, (320, 320)) if size != 320 else out
        img[y0:y1, x0:x1] = cv2.resize(crop, (x1 - x0, y1 - y0))
        if writer is None:
            writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 25,
                                     (img.shape[1], img.shape[0]))
        writer.write(img)
    writer.release()
    media.run_ffmpeg(["-y", "-i", str(avi), "-i", str(speech(work, seconds)), "-c:v", "libx264",
                      "-preset", "medium", "-crf", "18", "-c:a", "aac", "-shortest",
                      str(work / "ref.mp4")])
    wall = time.perf_counter() - start
    return {"frames": n, "seconds": round(wall, 2), "fps": round(n / wall, 2),
            "backend": "reference loop (torch eager fp32, batch 1)"}


def run_case(work: Path, case: str, seconds: float) -> dict:
    import torch

    torch.set_num_threads(2)
    kind, preset, backend, source = case.split(":")
    row = (run_reference(work, preset, source, seconds) if kind == "reference"
           else run_ours(work, preset, backend, source, seconds))
    row.update(case=case, kind=kind, preset=preset, source=source, audio_s=seconds,
               peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    return row


# ----------------------------------------------------------------------------- driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="audio length per case")
    parser.add_argument("--presets", nargs="+", default=["cpu", "cpu+ave", "hd328"])
    parser.add_argument("--backends", nargs="+", default=["onnx", "torch"])
    parser.add_argument("--sources", nargs="+", default=["512", "1080"])
    parser.add_argument("--long", type=float, default=120.0,
                        help="also render this many seconds (cpu, onnx, 512) to check memory")
    parser.add_argument("--only", nargs="+", metavar="PRESET-SOURCE",
                        help="just these, e.g. cpu-1080 hd328-512: onnx, with their reference "
                             "loops, no long-audio check")
    parser.add_argument("--quick", action="store_true",
                        help="cpu and hd328 at 512 and 1080 on onnx, no long-audio check")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="reuse (and keep) this set-up folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "infer.json")
    args = parser.parse_args()
    if args.one:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args.work, args.one, args.seconds)))
        return 0
    only = None
    if args.quick:
        args.presets, args.backends, args.long = ["cpu", "hd328"], ["onnx"], 0
    if args.only:
        only = {tuple(x.rsplit("-", 1)) for x in args.only}
        args.presets = sorted({p for p, _ in only})
        args.sources = sorted({s for _, s in only})
        args.backends, args.long = ["onnx"], 0
    started = machine()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-infer-"))
    if not (work / "dataset").is_dir() or args.work is None:
        make_people(work, args.presets, args.sources)
    cases = [(f"ours:{p}:{b}:{s}", args.seconds) for s in args.sources for p in args.presets
             for b in args.backends]
    cases += [(f"reference:{p}:torch:{s}", args.seconds) for s in args.sources
              for p in args.presets if "+" not in p]
    if only:
        cases = [(c, s) for c, s in cases if tuple(c.split(":")[1::2]) in only]
    if args.long and "cpu" in args.presets and "512" in args.sources:
        cases += [("ours:cpu:onnx:512", 10.0), ("ours:cpu:onnx:512", args.long)]
    rows = []
    for case, seconds in cases:
        done = subprocess.run([sys.executable, __file__, "--one", case, "--work", str(work),
                               "--seconds", str(seconds)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            print(f"{case}: failed ({done.returncode}): {done.stderr.strip()[-400:]}")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {case} {seconds:g}s: {rows[-1]['fps']} fps", flush=True)
    base = {(r["preset"], r["source"]): r["fps"] for r in rows if r["kind"] == "reference"}
    for r in rows:
        if r["kind"] == "ours" and (r["preset"], r["source"]) in base:
            r["ratio_vs_reference_loop"] = round(r["fps"] / base[r["preset"], r["source"]], 2)
        r["ratio_vs_design_figure"] = round(r["fps"] / REFERENCE_FPS[r["source"]], 2)
    plain = {(r["preset"], r["case"].split(":")[2], r["source"], r["audio_s"]): r["fps"]
             for r in rows if r["kind"] == "ours"}
    for r in rows:
        base = r["preset"].partition("+")[0]
        key = (base, r["case"].split(":")[2], r["source"], r["audio_s"])
        if "+" in r["preset"] and key in plain:
            r["ratio_vs_ave"] = round(r["fps"] / plain[key], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": started, "rows": rows}, indent=2) + "\n")
    print(f"{'case':<32}{'audio s':>8}{'frames/s':>10}{'x ref loop':>11}{'x §9':>7}"
          f"{'x base':>7}{'peak MB':>9}")
    for r in rows:
        print(f"{r['case']:<32}{r['audio_s']:>8g}{r['fps']:>10.2f}"
              f"{r.get('ratio_vs_reference_loop', float('nan')):>11.2f}"
              f"{r['ratio_vs_design_figure']:>7.2f}{r.get('ratio_vs_ave', float('nan')):>7.2f}"
              f"{r['peak_rss_mb']:>9}")
    print("x ref loop: vs the re-created SyncTalk_2D loop in this run (same model and source); "
          "x §9: vs docs/design.md §9's measured reference (3.2 fps at 512², 2.5 at 1080p)")
    print(f"wrote {args.out} (machine: {started})")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
