"""The avatar server under load: N concurrent streamed animations (N = 1, 2, 4 by default) of
the `cpu` preset at 512², frames/s per stream and first-frame latency.

Starts `python -m synctalk_lib serve` on the bench person of bench/infer.py (the demo at 512²,
random-weight `cpu` generator) on a free loopback port, then for each N requests N animations
of the same sentence at one moment (`GET /generate`, NDJSON frames). A stream's frames/s is
its frames over its time from request to last frame; a stream is real time when that is at
least 25. The server runs all model work on one thread, so streams share it in turns.
Writes bench/results/server_load.json (with the machine) and prints a table.

    .venv/bin/python bench/server_load.py [--streams 1 2 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TEXT = "Hello there. This is a test of several people talking to the same avatar at once."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_stream(url: str, text: str) -> dict:
    """Time to the first frame, frames and frames/s of one streamed animation."""
    import httpx

    t0 = time.perf_counter()
    first, frames, end = None, 0, None
    with httpx.stream("GET", f"{url}/generate", params={"text": text}, timeout=300) as resp:
        if resp.status_code != 200:
            resp.read()
            return {"status": resp.status_code, "detail": resp.text[:200]}
        for line in resp.iter_lines():
            msg = json.loads(line)
            if msg["type"] == "frame":
                first = first or time.perf_counter() - t0
                frames += 1
            elif msg["type"] in ("end", "error"):
                end = msg["type"]
    wall = time.perf_counter() - t0
    return {"status": 200, "end": end, "frames": frames, "first_frame_s": round(first or 0, 3),
            "seconds": round(wall, 2), "fps": round(frames / wall, 2)}


def serve(work: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SYNCTALK_TEMP_DIR": str(work / "server-tmp")}
    cmd = [sys.executable, "-m", "synctalk_lib", "serve", "--name", "p512", "--root",
           str(work / "dataset"), "--checkpoints", str(work / "checkpoints" / "cpu"),
           "--outputs", str(work / "outputs"), "--port", str(port), "--max-requests", "8",
           "--threads", "2"]
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user would stop it; killed after 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--work", type=Path, help="a bench/infer.py set-up to reuse")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" /
                        "server_load.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import infer as bench_infer  # the set-up and the machine's description

    started = bench_infer.machine()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-server-"))
    if not (work / "dataset" / "p512").is_dir():
        bench_infer.make_people(work, ["cpu"], ["512"])
    port, log = _free_port(), work / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = serve(work, port, log)
    rows = []
    try:
        wait_healthy(url, proc, log)
        one_stream(url, "Warm up.")  # caches, ONNX warm-up, the pause calibration
        for n in args.streams:
            with concurrent.futures.ThreadPoolExecutor(n) as pool:
                got = list(pool.map(lambda i: one_stream(url, f"{TEXT} Number {i}."),
                                    range(n)))
            bad = [g for g in got if g.get("status") != 200 or g.get("end") != "end"]
            if bad:
                raise SystemExit(f"{n} streams: {bad}")
            fps = [g["fps"] for g in got]
            first = [g["first_frame_s"] for g in got]
            rows.append({"streams": n, "fps_per_stream": fps,
                         "fps_median": round(float(np.median(fps)), 2),
                         "first_frame_s": first, "first_frame_max_s": max(first),
                         "real_time": all(f >= 25 for f in fps), "frames": [g["frames"]
                                                                             for g in got]})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        stop_server(proc)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": started, "rows": rows}, indent=2) + "\n")
    print(f"{'streams':>8}{'fps/stream (median)':>21}{'first frame max s':>19}{'real time':>11}")
    for r in rows:
        print(f"{r['streams']:>8}{r['fps_median']:>21.2f}{r['first_frame_max_s']:>19.3f}"
              f"{'yes' if r['real_time'] else 'no':>11}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
