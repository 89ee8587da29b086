"""Avatar server: a trained person speaks typed text or uploaded audio, in the browser.

    python -m synctalk_lib serve --name demo        # http://127.0.0.1:8000/ , docs at /docs

One process loads one person once (`infer.Avatar`). All model work runs on one thread
(`ModelWorker`): the avatar's generator, template reader and streams are not thread-safe, and
on a small CPU two requests computing side by side would only slow each other down. Requests
push their audio through that thread in 0.2 s chunks, so concurrent requests interleave fairly;
at most `max_requests` are admitted at once and the rest get 503 at once, which bounds memory.

The streaming format (`GET /generate`, `POST /generate-from-audio?stream=true`) is
newline-delimited JSON, one object per line, so a browser plays it with `fetch` alone:

    {"type": "meta", "fps": 25, "sample_rate": 16000, "n_frames": N, "duration": s,
     "width": W, "height": H, "request": id}
    {"type": "audio", "mime": "audio/wav", "data": base64 wav (all of it, before any frame)}
    {"type": "frame", "index": t, "time": t / fps, "data": base64 JPEG}   # t = 0 .. N-1
    {"type": "end", "frames": N, "first_frame_s": …, "seconds": …}
    {"type": "error", "detail": "…"}   # instead of "end" if inference fails midway

Frame t shows the mouth for audio samples [t, t+1) * sample_rate / fps, so a player that
draws frame floor(audio.currentTime * fps) stays in sync; frames come out about 0.5 s of audio
behind what was pushed (the generator's lookahead) and faster than real time on a CPU.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import hmac
import ipaddress
import itertools
import json
import logging
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import soundfile as sf
from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.types import Message, Receive, Scope, Send

from . import audio as audio_lib
from . import files, infer, media, tts

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"  # a folder name, never a path
SPEED_RANGE = (0.5, 2.0)  # speech speed multiplier; 1.0 = espeak's 160 words per minute
ESPEAK_WPM = 160
SMALL_BODY_BYTES = 256 * 1024  # JSON bodies and forms other than the audio upload
RECENT_JOBS = 20  # requests remembered by /debug/status
NDJSON = "application/x-ndjson"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
DEBUG_TOKEN_HEADER = "X-Debug-Token"


# ---------------------------------------------------------------------- settings


class ServerSettings(BaseSettings):
    """Everything the server needs, typed; from env vars `SYNCTALK_<FIELD>` or CLI flags."""

    model_config = SettingsConfigDict(env_prefix="SYNCTALK_", extra="forbid")

    # the person and its model
    name: str = Field(description="person to serve: dataset/<name>, checkpoints/<name>")
    dataset_root: Path = Path("dataset")
    checkpoints_root: Path = Path("checkpoints")
    output_root: Path = Path("outputs")
    # best (generator_best.pt, else the newest), latest, or a file: generators.resolve_checkpoint
    checkpoint: Path | None = None
    backend: Literal["auto", "torch", "onnx"] = "auto"
    device: str | None = None  # cpu, cuda, cuda:1 … (default: cuda when present)
    threads: int | None = Field(None, ge=1, description="torch / onnxruntime threads")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="config overrides, e.g. infer.mode=core")
    warmup: bool = True  # one short render at start-up, so the first request is fast
    # network
    host: str = "127.0.0.1"  # loopback: nothing else on the network can reach the model
    port: int = Field(8000, ge=0, le=65535)
    max_connections: int = Field(64, ge=1)  # uvicorn answers 503 beyond this
    # Host header names served (any port); others get 400, so a web page elsewhere cannot
    # reach a loopback server through DNS rebinding. "*" serves any name.
    allowed_hosts: list[str] = Field(default_factory=lambda: list(LOOPBACK_HOSTS))
    request_timeout_s: float = Field(600.0, gt=0)  # a whole request, sending included
    send_timeout_s: float = Field(30.0, gt=0)  # one write to a client that stopped reading
    # a connection whose client has not sent a whole request's headers in this long is closed
    header_timeout_s: float = Field(10.0, gt=0)
    # speech
    voice: str = "en-us"  # espeak-ng language tag (see GET /voices)
    speed: float = Field(1.0, ge=SPEED_RANGE[0], le=SPEED_RANGE[1])
    piper_model: Path | None = None  # a Piper voice (.onnx beside its .onnx.json) replaces espeak
    # limits
    max_text_chars: int = Field(1000, ge=1, le=tts.MAX_CHARS)
    max_upload_mb: float = Field(20.0, gt=0)
    max_audio_s: float = Field(120.0, gt=0)
    max_requests: int = Field(4, ge=1)  # animations admitted at once; more get 503
    chunk_s: float = Field(0.2, gt=0, le=2.0)  # audio pushed per model step
    jpeg_quality: int = Field(85, ge=10, le=100)
    temp_dir: Path | None = None  # parent of the server's own temp folder (default: system)
    # debug
    debug: bool = False  # save what requests produce under outputs/<name>/debug/
    debug_save_frames: bool = True
    debug_save_audio: bool = True
    debug_max_request_mb: float = Field(50.0, gt=0)  # one request's saves; the rest skipped
    debug_max_total_mb: float = Field(500.0, gt=0)  # the debug folder; oldest requests go first
    # POST /debug/config needs this in the X-Debug-Token header; without a token, debug can be
    # changed only on a loopback server
    debug_token: str | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value) or ".." in value:
            raise ValueError(f"name {value!r} must be a plain folder name (letters, digits, "
                             "'_', '-', '.'; no '/' or '..')")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def debug_folder(self) -> Path:
        return self.output_root / self.name / "debug"

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the bound address."""
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------- speech


class Speaker:
    """Text to 16 kHz speech: espeak-ng (offline, bundled) or a configured Piper voice."""

    def __init__(self, settings: ServerSettings, sample_rate: int) -> None:
        self.settings, self.sample_rate = settings, sample_rate
        self.engine = "piper" if settings.piper_model else "espeak"
        self._piper = _load_piper(settings.piper_model) if settings.piper_model else None
        self._lock = threading.Lock()  # one Piper synthesis at a time (espeak has its own)

    def describe(self) -> dict[str, Any]:
        return {"engine": self.engine, "voice": self.settings.voice, "speed": self.settings.speed,
                "piper_model": str(self.settings.piper_model) if self._piper else None,
                "max_text_chars": self.settings.max_text_chars}

    def check_text(self, text: str) -> str:
        """The stripped text, or a 422 that says what is wrong."""
        try:
            tts.check_text(text or "")
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        text = (text or "").strip()
        limit = self.settings.max_text_chars
        if not text:
            raise HTTPException(422, "text is empty; type at least one word to speak")
        if len(text) > limit:
            raise HTTPException(422, f"text has {len(text)} characters; the limit is {limit} "
                                     "(split it, or raise SYNCTALK_MAX_TEXT_CHARS)")
        return text

    def speak(self, text: str, voice: str | None = None, speed: float | None = None
              ) -> np.ndarray:
        """(N,) float32 mono at `sample_rate`; ValueError / tts.TTSError on bad input."""
        speed = self.settings.speed if speed is None else speed
        if not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise ValueError(f"speed={speed} is outside {SPEED_RANGE[0]}..{SPEED_RANGE[1]}")
        if self._piper is not None:
            return self._speak_piper(text, speed)
        wpm = round(ESPEAK_WPM * speed)
        return tts.synthesize(text, voice=voice or self.settings.voice, wpm=wpm,
                              sample_rate=self.sample_rate,
                              max_chars=self.settings.max_text_chars).audio

    def _speak_piper(self, text: str, speed: float) -> np.ndarray:
        from piper import SynthesisConfig

        with self._lock:
            chunks = list(self._piper.synthesize(text, SynthesisConfig(length_scale=1 / speed)))
        if not chunks:
            raise ValueError(f"Piper made no speech for {text!r}; give words it can read")
        wav = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        return _resample(wav, chunks[0].sample_rate, self.sample_rate)

    def voices(self) -> list[str]:
        return [self.settings.piper_model.stem] if self._piper else tts.list_voices()

    def variants(self) -> list[str]:
        """espeak-ng voice variants, used as <voice>+<variant> (Piper has none)."""
        return [] if self._piper else tts.list_variants()


def _load_piper(path: Path) -> Any:
    """A Piper voice, or a TTSError that says how to get one working."""
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise tts.TTSError("piper_model is set but Piper is not installed; run "
                           "`.venv/bin/pip install piper-tts` (or unset SYNCTALK_PIPER_MODEL)"
                           ) from exc
    config = Path(f"{path}.json")
    if not path.is_file() or not config.is_file():
        raise tts.TTSError(f"Piper voice {path} (with {config.name} beside it) not found; "
                           "download a voice once, e.g. en_US-lessac-medium.onnx + .onnx.json")
    return PiperVoice.load(path, config_path=config)


def _resample(wav: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wav
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, target)
    return resample_poly(wav, target // g, rate // g).astype(np.float32)


# ---------------------------------------------------------------------- the model thread


class ModelWorker:
    """Runs all model work on one thread, in submission order; admits a bounded number of
    requests. Only the event loop calls `admit`/`release`, so counters need no lock."""

    def __init__(self, max_requests: int, on_idle: Callable[[], Any] | None = None) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="synctalk-model")
        self.max_requests = max_requests
        self.on_idle = on_idle  # called when the last request ends, after the heap trim
        self.active = 0
        # served; refused (503); rejected (bad input); cancelled (client left); failed
        self.counts = {"served": 0, "refused": 0, "rejected": 0, "cancelled": 0, "failed": 0}

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the model thread. Cancelling the await drops a job not yet started."""
        return await asyncio.wrap_future(self._pool.submit(fn, *args))

    def admit(self) -> None:
        if self.active >= self.max_requests:
            self.counts["refused"] += 1
            raise HTTPException(503, f"busy: {self.active} animations are in progress (the "
                                     f"limit is {self.max_requests}); retry in a moment",
                                headers={"Retry-After": "1"})
        self.active += 1

    def release(self, outcome: str) -> None:
        self.active -= 1
        self.counts[outcome] += 1
        if self.active == 0:
            _trim_memory()
            if self.on_idle is not None:
                self.on_idle()

    def state(self) -> dict[str, int]:
        return {"active": self.active, "max": self.max_requests, **self.counts}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 256 * 1024


def _fix_mmap_threshold() -> None:
    """Serve large blocks (frames, audio, model tensors) from mmap, which is returned to the OS
    on free. glibc's default threshold grows after the first big frees, and then frames land
    in the heap: measured on the demo, a burst of 20 requests left +10..37 MB behind with the
    default and +1..3 MB with this."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _trim_memory() -> None:
    """Hand freed heap back to the OS when idle (glibc keeps it otherwise), so the server's
    memory returns to its resting level after a burst of requests."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mb() -> float | None:
    """Resident memory of this process in MB (Linux), for /debug/status and the load test."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * 4096 / 2**20


# ---------------------------------------------------------------------- debug saving


class DebugStore:
    """Debug saves under one folder within two budgets: per request (a request's files past
    its budget are skipped) and in total (the oldest request folders are deleted to make room;
    ids start with their time, so name order is age order). One client switching debug on
    must not fill the disk. Thread-safe: frames are saved on the model thread, audio on the
    event loop."""

    def __init__(self, folder: Path, per_request_bytes: int, total_bytes: int) -> None:
        self.folder, self.per_request, self.total = folder, per_request_bytes, total_bytes
        self.skipped = 0  # files not saved for lack of budget
        self._lock = threading.Lock()
        self._used: dict[str, int] | None = None  # bytes per request folder, scanned lazily
        self._active: set[str] = set()

    def _sizes(self) -> dict[str, int]:
        if self._used is None:
            self._used = {}
            if self.folder.is_dir():
                for sub in self.folder.iterdir():
                    if sub.is_dir():
                        self._used[sub.name] = sum(f.stat().st_size for f in sub.rglob("*")
                                                   if f.is_file())
        return self._used

    def open(self, request_id: str) -> Path:
        """The request's folder, created now (OSError if the disk refuses)."""
        folder = self.folder / request_id
        with self._lock:
            sizes = self._sizes()
            folder.mkdir(parents=True, exist_ok=True)
            sizes.setdefault(request_id, 0)
            self._active.add(request_id)
        return folder

    def close(self, request_id: str) -> None:
        with self._lock:
            self._active.discard(request_id)

    def write(self, request_id: str, name: str, data: bytes) -> bool:
        """Save one file of an open request; False (and nothing written) past a budget."""
        with self._lock:
            sizes = self._sizes()
            used = sizes.get(request_id)
            if used is None or used + len(data) > self.per_request:
                self.skipped += 1
                return False
            for old in sorted(sizes):
                if sum(sizes.values()) + len(data) <= self.total:
                    break
                if old not in self._active:
                    shutil.rmtree(self.folder / old, ignore_errors=True)
                    del sizes[old]
            if sum(sizes.values()) + len(data) > self.total:
                self.skipped += 1
                return False
            (self.folder / request_id / name).write_bytes(data)
            sizes[request_id] = used + len(data)
            return True

    def used_mb(self) -> float:
        with self._lock:
            return round(sum(self._sizes().values()) / 2**20, 3)


# ---------------------------------------------------------------------- requests


@dataclass
class Job:
    """One animation request, as /debug/status reports it."""

    id: str
    kind: str
    audio_s: float = 0.0
    n_frames: int = 0
    frames_out: int = 0
    first_frame_s: float | None = None
    seconds: float | None = None
    status: str = "running"
    debug_folder: str | None = None
    streaming: bool = False  # a JobStream ends it, not the handler
    started: float = field(default_factory=time.perf_counter, repr=False)

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("started")
        return out


class ClientGone(Exception):
    """The client disconnected; stop working for it."""


class Server:
    """State shared by the endpoints: the avatar, its worker, speech, limits and debug."""

    def __init__(self, settings: ServerSettings, avatar: infer.Avatar) -> None:
        self.settings, self.avatar = settings, avatar
        self.cfg = avatar.cfg
        self.sample_rate = self.cfg.media.sample_rate
        self.fps = self.cfg.media.fps
        self.speaker = Speaker(settings, self.sample_rate)
        self.worker = ModelWorker(settings.max_requests, on_idle=avatar.release_file_pages)
        self.debug = {"enabled": settings.debug, "save_frames": settings.debug_save_frames,
                      "save_audio": settings.debug_save_audio}
        self.debug_store = DebugStore(settings.debug_folder,
                                      int(settings.debug_max_request_mb * 2**20),
                                      int(settings.debug_max_total_mb * 2**20))
        self.timeouts = {"deadline": 0, "send": 0}  # requests cut by Deadlines
        parent = settings.temp_dir
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        self.tmp = files.owned_temp_dir("synctalk-server-", parent)  # a killed server's goes later
        still = avatar.still()
        self.frame_size = (int(still.shape[1]), int(still.shape[0]))
        self.still_jpeg = self.jpeg(still)
        self.jobs: deque[Job] = deque(maxlen=RECENT_JOBS)
        self._ids = itertools.count(1)
        self.started = time.time()

    # -- helpers
    def jpeg(self, frame: np.ndarray) -> bytes:
        """(H, W, 3) uint8 RGB -> JPEG bytes at the configured quality."""
        return media.image_bytes(frame, quality=self.settings.jpeg_quality)

    @contextlib.asynccontextmanager
    async def job(self, kind: str) -> AsyncIterator[Job]:
        """Admit a request (503 when full) for the handler's duration and record how it ended;
        a handler that returns a JobStream hands the ending over to it."""
        job = self._new_job(kind)
        try:
            yield job
        except HTTPException:
            self.end_job(job, "rejected")
            raise
        except ClientGone:
            self.end_job(job, "cancelled")
            raise
        except BaseException:
            self.end_job(job, "failed")
            raise
        if not job.streaming:
            self.end_job(job, "served")

    def _new_job(self, kind: str) -> Job:
        self.worker.admit()
        job = Job(id=f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._ids):04d}", kind=kind)
        self.jobs.append(job)
        if self.debug["enabled"]:
            try:
                folder = self.debug_store.open(job.id)
            except OSError:
                self.end_job(job, "failed")
                raise
            job.debug_folder = str(folder)
        return job

    def end_job(self, job: Job, outcome: str) -> None:
        if job.status != "running":
            return  # already ended
        job.status = outcome
        job.seconds = round(time.perf_counter() - job.started, 3)
        if job.debug_folder:
            self.debug_store.close(job.id)
        self.worker.release(outcome)
        log.info("%s %s: %s, %d frames, first frame after %s s, %.2f s", job.kind, job.id,
                 outcome, job.frames_out, job.first_frame_s, job.seconds)

    def check_speech(self, wav: np.ndarray, what: str) -> None:
        """Refuse audio the avatar cannot or should not animate (422 with the reason)."""
        seconds = len(wav) / self.sample_rate
        if seconds > self.settings.max_audio_s:
            raise HTTPException(422, f"{what} is {seconds:.0f} s long; the limit is "
                                     f"{self.settings.max_audio_s:.0f} s (SYNCTALK_MAX_AUDIO_S)")
        try:
            infer.check_speech(wav, self.cfg)
        except infer.InferError as exc:
            raise HTTPException(422, f"{what}: {exc}") from exc

    def save_debug_audio(self, job: Job, wav: np.ndarray) -> None:
        if job.debug_folder and self.debug["save_audio"]:
            self.debug_store.write(job.id, "audio.wav", media.wav_bytes(wav, self.sample_rate))

    def token_given(self, given: str | None) -> bool:
        """Whether `given` is the operator's debug token (False when none is set)."""
        token = self.settings.debug_token
        return bool(token and given and hmac.compare_digest(given.encode(), token.encode()))

    def check_debug_token(self, given: str | None) -> None:
        """403 unless the operator's token is given, or (no token set) the server is loopback
        only: anyone who can reach it could otherwise switch on saving."""
        if self.settings.debug_token:
            if not self.token_given(given):
                raise HTTPException(403, "changing debug settings needs the operator's token "
                                         f"in the {DEBUG_TOKEN_HEADER} header")
        elif not self.settings.loopback:
            raise HTTPException(403, f"debug settings are fixed on a server bound to "
                                     f"{self.settings.host} (reachable from the network); "
                                     "start it with --debug-token (or SYNCTALK_DEBUG_TOKEN) "
                                     "to allow changes")

    def check_status_token(self, given: str | None) -> None:
        """403 when the operator set a token and `given` is not it: who set a token wants
        the requests' timings, the debug folder and memory kept to the operator too."""
        if self.settings.debug_token and not self.token_given(given):
            raise HTTPException(403, "reading debug status needs the operator's token in the "
                                     f"{DEBUG_TOKEN_HEADER} header")

    async def speech(self, text: str, voice: str | None, speed: float | None) -> np.ndarray:
        """TTS off the event loop; bad voice/speed become 422."""
        try:
            return await run_in_threadpool(self.speaker.speak, text, voice, speed)
        except (ValueError, tts.TTSError) as exc:
            raise HTTPException(422, str(exc)) from exc

    # -- the animation loop
    async def frames(self, job: Job, wav: np.ndarray, sink: Callable[[int, np.ndarray], Any],
                     disconnected: Callable[[], Awaitable[bool]] | None = None
                     ) -> AsyncIterator[list[Any]]:
        """Push `wav` through a fresh stream chunk by chunk on the model thread and yield, per
        chunk, sink(index, frame) for the frames it finished (sink runs on the model thread:
        JPEG encoding or video writing, plus debug saving)."""
        avatar = self.avatar
        job.audio_s = round(len(wav) / self.sample_rate, 3)
        job.n_frames = audio_lib.n_video_frames(len(wav), self.cfg.media)
        live = await self.worker.run(avatar.stream, avatar.planned_templates(job.n_frames), wav)
        save = bool(job.debug_folder) and self.debug["save_frames"]

        def step(chunk: np.ndarray | None) -> list[Any]:
            made = live.push(chunk) if chunk is not None else live.finish()
            first = live.n_written - len(made)
            out = []
            for k, frame in enumerate(made):
                out.append(sink(first + k, frame))
                if save:
                    self.debug_store.write(job.id, f"{first + k:06d}.jpg", self.jpeg(frame))
            return out

        hop = max(1, round(self.settings.chunk_s * self.sample_rate))
        chunks: list[np.ndarray | None] = [wav[i:i + hop] for i in range(0, len(wav), hop)]
        try:
            for chunk in [*chunks, None]:
                if disconnected is not None and await disconnected():
                    raise ClientGone
                out = await self.worker.run(step, chunk)
                if out:
                    if job.first_frame_s is None:
                        job.first_frame_s = round(time.perf_counter() - job.started, 3)
                    job.frames_out += len(out)
                    yield out
        finally:
            live.close()

    async def ndjson(self, job: Job, wav: np.ndarray) -> AsyncIterator[bytes]:
        """The streaming format of the module docstring."""
        meta = {"type": "meta", "fps": self.fps, "sample_rate": self.sample_rate,
                "n_frames": audio_lib.n_video_frames(len(wav), self.cfg.media),
                "duration": len(wav) / self.sample_rate, "width": self.frame_size[0],
                "height": self.frame_size[1], "request": job.id}
        yield _line(meta)
        yield _line({"type": "audio", "mime": "audio/wav", "data": _b64(media.wav_bytes(
            wav, self.sample_rate))})

        def encode(index: int, frame: np.ndarray) -> bytes:
            return _line({"type": "frame", "index": index, "time": index / self.fps,
                          "data": _b64(self.jpeg(frame))})

        try:
            async for lines in self.frames(job, wav, encode):
                yield b"".join(lines)
        except (infer.InferError, media.MediaError, RuntimeError) as exc:
            log.exception("animation %s failed", job.id)
            self.end_job(job, "failed")
            yield _line({"type": "error", "detail": str(exc)})
            return
        self.end_job(job, "served")
        yield _line({"type": "end", "frames": job.frames_out,
                     "first_frame_s": job.first_frame_s,
                     "seconds": round(time.perf_counter() - job.started, 3)})

    async def mp4(self, job: Job, wav: np.ndarray, request: Request) -> Response:
        """The finished video (H.264 + AAC); work stops if the client goes away."""
        folder = self.tmp / job.id
        folder.mkdir()
        try:
            audio_path = folder / "audio.wav"
            sf.write(audio_path, wav, self.sample_rate, subtype="FLOAT")
            out = folder / "animation.mp4"
            writer = media.VideoWriter(out, fps=self.fps, crf=self.cfg.infer.crf,
                                       preset=self.cfg.infer.x264_preset, audio=audio_path)

            def write(index: int, frame: np.ndarray) -> None:
                writer.write(frame)

            try:
                async for _ in self.frames(job, wav, write, request.is_disconnected):
                    pass
                await run_in_threadpool(writer.close)
            except BaseException:
                writer.abort()
                raise
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        headers = {"X-Frames": str(job.frames_out), "X-Request-Id": job.id,
                   "X-First-Frame-Seconds": str(job.first_frame_s)}
        return TempFileResponse(out, folder, media_type="video/mp4", headers=headers,
                                filename=f"{self.avatar.name}-{job.id}.mp4")

    def status(self) -> dict[str, Any]:
        changeable = bool(self.settings.debug_token) or self.settings.loopback
        return {**self.debug, "folder": str(self.settings.debug_folder),
                "changeable": changeable, "token_required": bool(self.settings.debug_token),
                "saved_mb": self.debug_store.used_mb(), "skipped_files": self.debug_store.skipped,
                "limits_mb": {"request": self.settings.debug_max_request_mb,
                              "total": self.settings.debug_max_total_mb},
                "requests": self.worker.state(), "timeouts": self.timeouts,
                "recent": [j.public() for j in reversed(self.jobs)],
                "memory_mb": rss_mb(), "temp_files": sum(1 for _ in self.tmp.rglob("*"))}

    def close(self) -> None:
        self.worker.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------- responses


class TempFileResponse(FileResponse):
    """A file response that deletes its temp folder however the sending ends."""

    def __init__(self, path: Path, folder: Path, **kw: Any) -> None:
        super().__init__(path, **kw)
        self._folder = folder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


class JobStream(StreamingResponse):
    """A streaming response that ends its job however the sending ends (a client that
    disconnects cancels the body iterator, which stops the model work)."""

    def __init__(self, server: Server, job: Job, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type=NDJSON,
                         headers={"X-Request-Id": job.id, "Cache-Control": "no-store"})
        self._server, self._job = server, job
        job.streaming = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._server.end_job(self._job, "cancelled")  # no-op once served/failed


class BodyLimit:
    """ASGI middleware: refuse request bodies over the limit (413) before or while reading
    them, so a huge upload never reaches memory or disk."""

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        detail = f"the request body is larger than the limit of {limit / 2**20:.1f} MB"
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode()
        if declared.isdigit() and int(declared) > limit:
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, detail)
            return message

        await self.app(scope, limited, send)


def host_name(header: str) -> str:
    """The name of a Host header, lower-cased, without port or IPv6 brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":")[0]
    return value.rstrip(".")


class HostCheck:
    """ASGI middleware: 400 unless the Host header names an allowed host (any port). A page on
    another site can point its own name at 127.0.0.1 (DNS rebinding) and then read a loopback
    server as same-origin; its requests still carry that name, so they are refused here."""

    def __init__(self, app: Any, allowed: list[str]) -> None:
        self.app = app
        self.allowed = {host_name(h) for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            raw = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            name = host_name(raw)
            if name not in self.allowed:
                log.info("refused Host %r (allowed: %s)", raw, sorted(self.allowed))
                detail = (f"this server does not answer to the host name {name[:100]!r}; "
                          "an operator adds names with --allowed-host or SYNCTALK_ALLOWED_HOSTS")
                await JSONResponse({"detail": detail}, 400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _SendTimeout(Exception):
    """A write to the client took longer than the send timeout."""


class Deadlines:
    """ASGI middleware: a request must end within `request_s` and each write to the client
    must complete within `send_s`; past either it is cancelled (handlers' clean-up runs and
    its animation slot frees) and the connection closed. Without this, a client that reads
    slowly or not at all keeps its slot, and four of them keep the server busy for anyone."""

    def __init__(self, app: Any, request_s: float, send_s: float,
                 counts: dict[str, int]) -> None:
        self.app, self.request_s, self.send_s, self.counts = app, request_s, send_s, counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, stalled = False, False

        async def timed_send(message: Message) -> None:
            nonlocal started, stalled
            started = started or message["type"] == "http.response.start"
            try:
                await asyncio.wait_for(send(message), self.send_s)
            except asyncio.TimeoutError:
                stalled = True
                raise _SendTimeout from None

        try:
            await asyncio.wait_for(self.app(scope, receive, timed_send), self.request_s)
            return
        except asyncio.TimeoutError:
            kind = "send" if stalled else "deadline"
        except Exception:  # _SendTimeout, maybe wrapped (an exception group, a handler's error)
            if not stalled:
                raise
            kind = "send"
        detail = (f"a write to the client waited more than {self.send_s:g} s (it reads too "
                  "slowly or not at all)" if kind == "send" else
                  f"the request took longer than {self.request_s:g} s")
        self.counts[kind] += 1
        log.warning("%s %s cut: %s", scope.get("method"), scope.get("path"), detail)
        if not started:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(JSONResponse({"detail": detail}, 503)(
                    scope, receive, send), self.send_s)
        # else: returning with the response incomplete makes the server close the connection


# ---------------------------------------------------------------------- the app


DESCRIPTION = __doc__.split("\n\n", 2)[2]


class GenerateBody(BaseModel):
    text: str = Field(description="what the avatar says")
    voice: str | None = Field(None, description="espeak-ng voice, e.g. en-us (GET /voices)")
    speed: float | None = Field(None, description="speech speed multiplier, 0.5 .. 2")


class DebugConfig(BaseModel):
    enabled: bool | None = None
    save_frames: bool | None = None
    save_audio: bool | None = None


def load_avatar(settings: ServerSettings) -> infer.Avatar:
    """The person's avatar as the settings describe it (InferError names what is missing)."""
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    return infer.Avatar.load(settings.name, dataset_root=settings.dataset_root,
                             checkpoints_root=settings.checkpoints_root,
                             output_root=settings.output_root, checkpoint=settings.checkpoint,
                             overrides=settings.overrides, backend=settings.backend,
                             device=settings.device)


def warm_up(server: Server) -> float:
    """Render one second of speech once: the first stream pays one-off costs (mel filters,
    onnxruntime first run, template decoder) that would otherwise delay the first request."""
    t0 = time.perf_counter()
    wav = server.speaker.speak("Hello there.")
    hop = round(server.settings.chunk_s * server.sample_rate)
    with server.avatar.stream(audio=wav) as live:
        for i in range(0, len(wav), hop):
            live.push(wav[i:i + hop])
        live.finish()
    return time.perf_counter() - t0


def create_app(settings: ServerSettings, avatar: infer.Avatar | None = None) -> FastAPI:
    """The FastAPI app for one person; loads the model now (errors surface before serving).

    avatar: an already loaded person (tests share one); default: load it from settings.
    """
    avatar = avatar or load_avatar(settings)
    if avatar.name != settings.name:
        raise ValueError(f"avatar {avatar.name!r} does not match settings.name {settings.name!r}")
    server = Server(settings, avatar)
    if settings.warmup:
        log.info("warm-up took %.2f s", warm_up(server))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.close()

    # FastAPIOffline: /docs and /redoc from bundled Swagger UI / ReDoc files, not a CDN
    app = FastAPIOffline(title=f"SyncTalk avatar: {settings.name}", description=DESCRIPTION,
                         version="1", lifespan=lifespan)
    app.state.server = server
    upload_limit = settings.max_upload_bytes
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit
                       if path == "/generate-from-audio" else SMALL_BODY_BYTES)
    app.add_middleware(Deadlines, request_s=settings.request_timeout_s,
                       send_s=settings.send_timeout_s, counts=server.timeouts)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)  # outermost: first check
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.add_exception_handler(ClientGone, _client_gone)
    _routes(app, server)
    return app


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


def _check_name(server: Server, name: str | None) -> None:
    if name is not None and name != server.avatar.name:
        raise HTTPException(404, f"this server animates {server.avatar.name!r}, not {name!r}; "
                                 f"start one with `python -m synctalk_lib serve --name <name>`")


TextQ = Annotated[str, Query(description="what the avatar says")]
VoiceQ = Annotated[str | None, Query(description="espeak-ng voice, e.g. en-us, de (GET /voices)")]
SpeedQ = Annotated[float | None, Query(description="speech speed multiplier, 0.5 .. 2 (1 = 160 "
                                                   "words per minute)")]
NameQ = Annotated[str | None, Query(description="optional: the person; must be the one served")]
AudioFile = Annotated[UploadFile, File(description="speech: wav, mp3, m4a, flac, ogg, webm …")]
StreamQ = Annotated[bool, Query(description="stream NDJSON instead of returning an mp4")]
STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {NDJSON: {}}, "description": "NDJSON lines: meta, audio, frame…, end"}}


def _routes(app: FastAPI, server: Server) -> None:
    """The HTTP API; each handler is a few lines over `Server`."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/generate", response_class=StreamingResponse, responses=STREAM_DOC)
    async def generate_stream(text: TextQ, voice: VoiceQ = None, speed: SpeedQ = None,
                              name: NameQ = None) -> Response:
        """Speak `text` and stream the animation as it is produced (NDJSON: meta, audio,
        frames, end)."""
        _check_name(server, name)
        text = server.speaker.check_text(text)
        async with server.job("generate-stream") as job:
            wav = await server.speech(text, voice, speed)
            server.check_speech(wav, "the speech for this text")
            server.save_debug_audio(job, wav)
            return JobStream(server, job, server.ndjson(job, wav))

    @app.post("/generate", response_class=FileResponse,
              responses={200: {"content": {"video/mp4": {}}}})
    async def generate_video(body: GenerateBody, request: Request, name: NameQ = None
                             ) -> Response:
        """Speak `text` and return the finished mp4 (H.264 + AAC, 25 fps)."""
        _check_name(server, name)
        text = server.speaker.check_text(body.text)
        async with server.job("generate-mp4") as job:
            wav = await server.speech(text, body.voice, body.speed)
            server.check_speech(wav, "the speech for this text")
            server.save_debug_audio(job, wav)
            return await server.mp4(job, wav, request)

    @app.post("/generate-from-audio",
              responses={200: {"content": {"video/mp4": {}, NDJSON: {}}}})
    async def generate_from_audio(request: Request, file: AudioFile, stream: StreamQ = False,
                                  name: NameQ = None) -> Response:
        """Animate uploaded speech: the finished mp4, or with stream=true the NDJSON stream."""
        _check_name(server, name)
        async with server.job("audio-stream" if stream else "audio-mp4") as job:
            wav = await _read_upload(server, job, file)
            server.check_speech(wav, "the uploaded audio")
            server.save_debug_audio(job, wav)
            if stream:
                return JobStream(server, job, server.ndjson(job, wav))
            return await server.mp4(job, wav, request)

    @app.get("/avatar", response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    async def still(name: NameQ = None) -> Response:
        """A still frame of the person (JPEG), e.g. to show before speaking."""
        _check_name(server, name)
        return Response(server.still_jpeg, media_type="image/jpeg")

    @app.get("/get-tts-audio", response_class=Response,
             responses={200: {"content": {"audio/wav": {}}}})
    async def tts_audio(text: TextQ, voice: VoiceQ = None, speed: SpeedQ = None) -> Response:
        """The speech for `text` alone, as a 16 kHz 16-bit wav."""
        wav = await server.speech(server.speaker.check_text(text), voice, speed)
        return Response(media.wav_bytes(wav, server.sample_rate), media_type="audio/wav")

    @app.get("/voices")
    async def voices() -> dict[str, Any]:
        """Voices the speech engine offers, and espeak-ng's variants (voice=en-us+f3)."""
        found = await run_in_threadpool(server.speaker.voices)
        variants = await run_in_threadpool(server.speaker.variants)
        return {**server.speaker.describe(), "voices": found, "variants": variants}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Model, device, backend and load."""
        av = server.avatar
        return {"status": "ok", "name": av.name, "checkpoint": av.checkpoint.name,
                "preset": server.cfg.preset, "backend": av.backend.describe(),
                "device": str(av.device), "fps": server.fps, "sample_rate": server.sample_rate,
                "frame_size": list(server.frame_size), "tts": server.speaker.describe(),
                "requests": server.worker.state(), "uptime_s": round(time.time() -
                                                                      server.started, 1)}

    @app.get("/debug/status")
    async def debug_status(request: Request) -> dict[str, Any]:
        """Debug settings, request counters, recent requests (time to first frame), memory.
        Needs the operator's token (X-Debug-Token) when one is set."""
        server.check_status_token(request.headers.get(DEBUG_TOKEN_HEADER))
        return server.status()

    @app.post("/debug/config")
    async def debug_config(change: DebugConfig, request: Request) -> dict[str, Any]:
        """Turn debug saving on/off: frames (JPEG) and audio (wav) of each request go to
        outputs/<name>/debug/<request id>/, within the per-request and total limits. Needs
        the operator's token (X-Debug-Token) when one is set, and on a non-loopback server."""
        server.check_debug_token(request.headers.get(DEBUG_TOKEN_HEADER))
        for key, value in change.model_dump(exclude_none=True).items():
            server.debug[key] = value
        log.info("debug settings: %s", server.debug)
        return server.status()


async def _read_upload(server: Server, job: Job, upload: UploadFile) -> np.ndarray:
    """Save the upload in the server's temp folder (its own name is never used as a path),
    then decode it to 16 kHz mono; 422 for empty or non-audio files."""
    suffix = Path(upload.filename or "").suffix.lower()
    suffix = suffix if suffix in infer.AUDIO_SUFFIXES else ".bin"
    path = server.tmp / f"{job.id}-upload{suffix}"
    try:
        size = 0
        with path.open("wb") as out:
            while block := await upload.read(1 << 20):
                size += len(block)
                if size > server.settings.max_upload_bytes:
                    raise HTTPException(413, "the upload is larger than the limit of "
                                             f"{server.settings.max_upload_mb:g} MB")
                out.write(block)
        if size == 0:
            raise HTTPException(422, "the uploaded file is empty")
        try:
            info = await run_in_threadpool(media.probe, path)
            if not info.has_audio:
                raise media.MediaError("no audio track")
            if info.duration > server.settings.max_audio_s:
                raise HTTPException(422, f"the uploaded audio is {info.duration:.0f} s long; the"
                                         f" limit is {server.settings.max_audio_s:.0f} s")
            return await run_in_threadpool(media.load_audio, path, server.sample_rate)
        except media.MediaError as exc:
            log.info("upload %r is not audio: %s", upload.filename, exc)
            raise HTTPException(422, f"{upload.filename or 'the upload'!r} is not audio ffmpeg "
                                     "can read; send wav, mp3, m4a, flac, ogg or webm") from None
    finally:
        path.unlink(missing_ok=True)


def serve(settings: ServerSettings) -> None:
    """Load the person and serve until interrupted (Ctrl-C)."""
    import uvicorn

    from .header_timeout import with_header_timeout

    if not settings.loopback:
        log.warning("serving on %s: anyone who can reach this address can use the model "
                    "(there is no authentication); debug changes need --debug-token",
                    settings.host)
        if set(settings.allowed_hosts) <= set(LOOPBACK_HOSTS):
            log.warning("only the host names %s are answered; add the names clients use "
                        "with --allowed-host", ", ".join(settings.allowed_hosts))
    _fix_mmap_threshold()
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info",
                limit_concurrency=settings.max_connections, timeout_graceful_shutdown=5,
                http=with_header_timeout(settings.header_timeout_s))


__all__ = ["ServerSettings", "Speaker", "create_app", "serve"]
