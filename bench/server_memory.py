"""The avatar server's memory at rest, after bursts of short requests and after long renders.

    .venv/bin/python bench/server_memory.py --name demo        # writes outputs/bench/server_memory.json

Starts `python -m synctalk_lib serve` for a trained person on a free loopback port and reads
the server process's /proc/<pid>/status (VmRSS = RssAnon + RssFile + RssShmem) and
/proc/<pid>/smaps (the resident part of the memory-mapped crop cache) at each stage:

    rest          after start-up (warm-up render included) and one short request
    burst k       after k bursts of `--burst` concurrent short streamed requests
    long k        after k renders of `--long-s` seconds of the person's own audio (upload,
                  streamed): these visit every template frame, so every crop
    short after   one more short request

The split says what stays: RssFile pages of the crop file are clean page cache (the kernel
drops them under memory pressure, other processes reading the file share them), RssAnon is
the process's own heap (which a leak would grow). The numbers are for the record in
docs/server.md; a busy machine changes the timings, not the memory.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from server_load import stop_server, wait_healthy

from synctalk_lib import dataset

MB = 2**20


def memory(pid: int, crops_file: str) -> dict[str, float]:
    """RSS and its split for `pid`, in MB, and the resident MB of the crop file's mapping."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            status[key] = int(value.split()[0]) / 1024
    crops_kb, in_crops = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=5)
        if len(first) >= 5 and "-" in first[0] and ":" in first[3]:  # a mapping's header line
            in_crops = len(first) == 6 and first[5].endswith(crops_file)
        elif in_crops and line.startswith("Rss:"):
            crops_kb += int(line.split()[1])
    return {"rss": status["VmRSS"], "anon": status["RssAnon"], "file": status["RssFile"],
            "shmem": status["RssShmem"], "crops_mapped": crops_kb / 1024}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stream(url: str, text: str) -> str:
    with httpx.stream("GET", f"{url}/generate", params={"text": text}, timeout=300) as resp:
        if resp.status_code != 200:
            resp.read()
            return str(resp.status_code)
        last = ""
        for line in resp.iter_lines():
            last = json.loads(line)["type"]
        return last


def _long(url: str, wav: bytes) -> dict[str, float]:
    """One streamed render of the uploaded audio: (seconds, first frame seconds)."""
    t0 = time.perf_counter()
    first = None
    with httpx.stream("POST", f"{url}/generate-from-audio", params={"stream": "true"},
                      files={"file": ("long.wav", wav, "audio/wav")}, timeout=900) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            kind = json.loads(line)["type"]
            if kind == "frame" and first is None:
                first = time.perf_counter() - t0
            if kind == "error":
                raise RuntimeError(line)
    return {"seconds": time.perf_counter() - t0, "first_frame_s": first}


def _settled(pid: int, crops_file: str) -> dict[str, float]:
    time.sleep(1.0)  # the server tidies up once the last request ends
    return memory(pid, crops_file)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", default="demo")
    ap.add_argument("--root", default="dataset")
    ap.add_argument("--checkpoints", default="checkpoints")
    ap.add_argument("--burst", type=int, default=20, help="concurrent short requests a burst")
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--long-s", type=float, default=60.0, help="seconds of audio a long render")
    ap.add_argument("--long-renders", type=int, default=3)
    ap.add_argument("--out", default="outputs/bench/server_memory.json")
    args = ap.parse_args()

    ds = dataset.load_dataset(args.name, args.root)
    crops_file = Path(ds.meta["crops_file"]).name
    audio = ds.wav()
    sr = ds.meta["sample_rate"]
    n = int(args.long_s * sr)
    audio = np.tile(audio, -(-n // len(audio)))[:n]
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="WAV", subtype="PCM_16")
    wav = buf.getvalue()

    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="server-memory-"))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "SYNCTALK_TEMP_DIR": str(tmp)}
    cmd = [sys.executable, "-m", "synctalk_lib", "serve", "--name", args.name, "--root",
           args.root, "--checkpoints", args.checkpoints, "--outputs", str(tmp / "outputs"),
           "--port", str(port), "--threads", "1"]
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    stages: list[dict] = []

    def record(stage: str, **extra: object) -> None:
        row = {"stage": stage, **_settled(proc.pid, crops_file), **extra}
        stages.append(row)
        print(f"{stage:<14} rss {row['rss']:7.0f}  anon {row['anon']:6.0f}  file "
              f"{row['file']:6.0f}  (crops {row['crops_mapped']:5.0f})  MB", flush=True)

    try:
        wait_healthy(url, proc, tmp / "server.log")
        _stream(url, "Hello there, this is the resting level.")
        record("rest")
        for k in range(1, args.bursts + 1):
            with concurrent.futures.ThreadPoolExecutor(args.burst) as pool:
                ends = list(pool.map(lambda i: _stream(url, f"Request {i}: hello there."),
                                     range(args.burst)))
            record(f"burst {k}", served=ends.count("end"), refused=ends.count("503"))
        for k in range(1, args.long_renders + 1):
            record(f"long {k}", **_long(url, wav))
        _stream(url, "One more short request.")
        record("short after")
    finally:
        stop_server(proc)
        log.close()

    info = {"name": args.name, "crops_file_mb": round(
        ds.paths.cached(ds.meta["crops_file"]).stat().st_size / MB, 1),
        "frames": len(ds.crops()), "long_s": args.long_s, "burst": args.burst,
        "python": sys.version.split()[0], "stages": stages}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=1))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
