"""Probe a running server with clients that send their request headers slowly (slowloris).

    python scripts/probe_slow_headers.py http://127.0.0.1:8000 --clients 70 --seconds 30

Opens `--clients` connections that each send a request line and then one header byte every
`--interval` seconds, never finishing the headers, and meanwhile asks `GET /health` once a
second. Prints, per second, how many slow connections the server still holds open and what
/health answered (200, or 503 when uvicorn's connection limit is full), then a JSON summary.
Used for docs/hardening.md; not a test, since it takes tens of seconds.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from urllib.parse import urlparse

import httpx


def trickle(host: str, port: int, interval: float, stop: threading.Event,
            closed_at: list[float | None], i: int, t0: float) -> None:
    """One slow client: a request line, then a header byte per `interval` until closed."""
    try:
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(interval)
        while not stop.is_set():
            try:
                if sock.recv(1024) == b"":
                    break  # the server closed the connection
            except TimeoutError:
                pass
            sock.sendall(b"a")
    except OSError:
        pass  # reset or refused: closed by the server
    else:
        sock.close()
        if stop.is_set():
            return
    closed_at[i] = time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--clients", type=int, default=70)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between header bytes")
    args = ap.parse_args()
    parts = urlparse(args.url)
    stop, t0 = threading.Event(), time.monotonic()
    closed: list[float | None] = [None] * args.clients
    threads = [threading.Thread(target=trickle, daemon=True, args=(
        parts.hostname, parts.port, args.interval, stop, closed, i, t0))
        for i in range(args.clients)]
    for t in threads:
        t.start()
    timeline = []
    while (now := time.monotonic() - t0) < args.seconds:
        try:
            code: int | str = httpx.get(f"{args.url}/health", timeout=5).status_code
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        open_now = sum(c is None for c in closed)
        timeline.append({"t": round(now, 1), "slow_open": open_now, "health": code})
        print(f"t={now:5.1f} s  slow connections open {open_now:3d}  /health {code}", flush=True)
        time.sleep(1.0)
    stop.set()
    shut = sorted(c for c in closed if c is not None)
    print(json.dumps({"clients": args.clients, "interval_s": args.interval,
                      "closed_by_server": len(shut),
                      "closed_after_s": [round(shut[0], 1), round(shut[-1], 1)] if shut else None,
                      "health_codes": sorted({str(r["health"]) for r in timeline})}))


if __name__ == "__main__":
    main()
