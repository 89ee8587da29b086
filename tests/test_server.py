"""Avatar server: every endpoint, its bad inputs, and a load test over real loopback HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from pydantic import ValidationError

fastapi_testclient = pytest.importorskip("fastapi.testclient")
httpx = pytest.importorskip("httpx")

from synctalk_lib import audio, infer, media, server, tts
from synctalk_lib.config import get_config

REPO = Path(__file__).resolve().parents[1]


def _settings(person, tmp: Path, **kw) -> server.ServerSettings:
    base = {"name": person.name, "dataset_root": person.dataset_root,
            "checkpoints_root": person.checkpoints_root, "output_root": tmp / "outputs",
            "temp_dir": tmp / "server-tmp", "warmup": False, "max_upload_mb": 1.0,
            "max_text_chars": 200, "max_audio_s": 20.0}
    return server.ServerSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def avatar(trained_person) -> infer.Avatar:
    return infer.Avatar.load(trained_person.name, dataset_root=trained_person.dataset_root,
                             checkpoints_root=trained_person.checkpoints_root)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def client(trained_person, avatar, app_dir):
    app = server.create_app(_settings(trained_person, app_dir), avatar)
    with fastapi_testclient.TestClient(app, base_url="http://127.0.0.1:8000") as c:
        yield c


@contextlib.contextmanager
def _client_for(settings: server.ServerSettings, avatar):
    """A TestClient of a second app on the shared avatar, with other settings."""
    with fastapi_testclient.TestClient(server.create_app(settings, avatar),
                                       base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def speech_wav(trained_person) -> bytes:
    """2 s of the held-out speech as wav bytes (an upload)."""
    wav = media.load_audio(trained_person.heldout_wav)
    start = int(np.argmax(np.abs(wav) > 0.05))
    return media.wav_bytes(wav[start:start + 32_000], 16_000)


def _lines(resp) -> list[dict]:
    assert resp.headers["content-type"].startswith(server.NDJSON)
    return [json.loads(line) for line in resp.text.splitlines()]


def _jpeg(b64: str) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _state(client) -> dict:
    return client.get("/debug/status").json()


# ------------------------------------------------------------------------- endpoints


def test_health_reports_model_device_and_backend(client, trained_person):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["name"] == trained_person.name
    assert body["checkpoint"].endswith(".pt") and body["preset"] == "tiny"
    assert "onnx" in body["backend"] or "torch" in body["backend"]
    assert body["device"] == "cpu" and body["fps"] == 25 and body["sample_rate"] == 16_000
    assert body["tts"]["engine"] == "espeak"


def test_page_and_its_assets_need_no_external_server(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    for text in (page.text, client.get("/static/app.js").text,
                 client.get("/static/style.css").text):
        assert "http://" not in text and "https://" not in text  # no CDN, works offline


def test_openapi_docs_describe_the_stream_format_and_work_offline(client):
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text and "http://" not in docs.text
    scripts = [part.split('"')[1] for part in docs.text.split("src=")[1:]]
    assert scripts and all(client.get(src).status_code == 200 for src in scripts)
    spec = client.get("/openapi.json").json()
    assert {"/generate", "/generate-from-audio", "/avatar", "/get-tts-audio", "/health",
            "/debug/status", "/debug/config"} <= set(spec["paths"])
    assert '"type": "frame"' in spec["info"]["description"]


def test_avatar_is_a_jpeg_still_of_the_person(client, avatar):
    resp = client.get("/avatar")
    assert resp.headers["content-type"] == "image/jpeg"
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    still = avatar.still()
    assert img.shape == still.shape
    assert np.abs(img.astype(int) - still).mean() < 3  # JPEG error only


def test_tts_audio_is_the_spoken_text_as_wav(client):
    resp = client.get("/get-tts-audio", params={"text": "Hello there, how are you?"})
    assert resp.headers["content-type"] == "audio/wav"
    wav, rate = sf.read(io.BytesIO(resp.content), dtype="float32")
    assert rate == 16_000 and 1.0 < len(wav) / rate < 3.0
    slow = client.get("/get-tts-audio", params={"text": "Hello there, how are you?",
                                                "speed": 0.5})
    assert len(sf.read(io.BytesIO(slow.content))[0]) > 1.5 * len(wav)


def test_voices_lists_espeak_languages(client):
    body = client.get("/voices").json()
    assert body["engine"] == "espeak" and "en-us" in body["voices"] and "de" in body["voices"]
    assert "f3" in body["variants"]


def test_stream_gives_the_audio_then_every_frame_in_sync(client, avatar):
    """Frame t of the stream is the offline render's frame t of the same speech."""
    text = "Good morning. Shall we begin?"
    lines = _lines(client.get("/generate", params={"text": text}))
    meta, sound, frames, end = lines[0], lines[1], lines[2:-1], lines[-1]
    assert meta["type"] == "meta" and sound["type"] == "audio" and end["type"] == "end"
    wav = tts.synthesize(text, sample_rate=16_000).audio
    streamed, rate = sf.read(io.BytesIO(base64.b64decode(sound["data"])), dtype="float32")
    assert rate == 16_000 and len(streamed) == len(wav)
    assert np.abs(streamed - wav).max() < 1e-3  # the wav is the speech, 16-bit
    n = audio.n_video_frames(len(wav), avatar.cfg.media)
    assert meta["n_frames"] == n == end["frames"] == len(frames)
    assert [f["index"] for f in frames] == list(range(n))
    assert [f["time"] for f in frames] == pytest.approx([t / 25 for t in range(n)])
    offline = list(avatar.frames(wav))
    assert len(offline) == n
    for t in (0, n // 2, n - 1):
        got = _jpeg(frames[t]["data"]).astype(int)
        assert np.abs(got - offline[t]).mean() < 3  # JPEG error only
        other = offline[min(t + 3, n - 1) if t < n - 1 else t - 3]
        assert np.abs(got - offline[t]).mean() < np.abs(got - other).mean()
    assert 0 < end["first_frame_s"] <= end["seconds"]


def test_post_generate_returns_an_mp4_with_sound(client, tmp_path):
    resp = client.post("/generate", json={"text": "A short video, please.", "speed": 1.2})
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
    path = tmp_path / "out.mp4"
    path.write_bytes(resp.content)
    info = media.probe(path)
    assert info.has_video and info.has_audio and info.fps == 25
    n = int(resp.headers["X-Frames"])
    assert n > 20 and info.duration == pytest.approx(n / 25, abs=0.1)


def test_upload_gives_an_mp4_or_a_stream(client, speech_wav, tmp_path):
    files = {"file": ("speech.wav", speech_wav, "audio/wav")}
    resp = client.post("/generate-from-audio", files=files)
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
    (tmp_path / "up.mp4").write_bytes(resp.content)
    assert media.probe(tmp_path / "up.mp4").duration == pytest.approx(2.0, abs=0.1)
    lines = _lines(client.post("/generate-from-audio", files=files, params={"stream": True}))
    assert lines[0]["n_frames"] == 50 and lines[-1] == {**lines[-1], "type": "end", "frames": 50}


def test_upload_name_is_never_used_as_a_path(client, speech_wav, app_dir):
    files = {"file": ("../../escaped.wav", speech_wav, "audio/wav")}
    assert client.post("/generate-from-audio", files=files).status_code == 200
    for folder in (app_dir.parent, app_dir.parent.parent, REPO, Path.cwd()):
        assert not list(folder.glob("escaped*"))
    assert not list(app_dir.rglob("escaped*"))
    assert _state(client)["temp_files"] == 0  # uploads and videos are deleted once sent


def test_debug_mode_saves_frames_and_audio(client, app_dir, trained_person):
    status = client.post("/debug/config", json={"enabled": True, "save_frames": True,
                                                "save_audio": True}).json()
    assert status["enabled"] and status["save_frames"] and status["save_audio"]
    try:
        lines = _lines(client.get("/generate", params={"text": "Debug me."}))
    finally:
        assert not client.post("/debug/config", json={"enabled": False}).json()["enabled"]
    folder = app_dir / "outputs" / trained_person.name / "debug" / lines[0]["request"]
    assert len(list(folder.glob("*.jpg"))) == lines[0]["n_frames"]
    wav, rate = sf.read(folder / "audio.wav")
    assert rate == 16_000
    assert audio.n_video_frames(len(wav), get_config("tiny").media) == lines[0]["n_frames"]
    recent = _state(client)["recent"][0]
    assert recent["id"] == lines[0]["request"] and recent["status"] == "served"
    assert recent["debug_folder"] == str(folder)


# ------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(("params", "status", "words"), [
    ({"text": ""}, 422, "empty"),
    ({"text": "   \n "}, 422, "empty"),
    ({"text": "word " * 60}, 422, "limit is 200"),
    ({}, 422, "text"),
    ({"text": "hi", "voice": "xx-nonsense"}, 422, "unknown espeak-ng voice"),
    ({"text": "hi", "voice": "en-us+zzz"}, 422, "no variant 'zzz'"),
    ({"text": "hi", "voice": "en-us+../../etc/passwd"}, 422, "unknown espeak-ng voice"),
    ({"text": "hello\x00world"}, 422, "NUL character"),
    ({"text": "hello", "speed": 7}, 422, "speed"),
    ({"text": "."}, 422, "long"),
    ({"text": "hello", "name": "somebody-else"}, 404, "not 'somebody-else'"),
    ({"text": "hello", "name": "../../etc"}, 404, "this server animates"),
])
def test_bad_text_requests_get_clear_errors(client, params, status, words):
    for resp in (client.get("/generate", params=params),
                 client.post("/generate", json={k: v for k, v in params.items() if k != "name"},
                             params={"name": params["name"]} if "name" in params else {})):
        assert resp.status_code == status
        assert words in json.dumps(resp.json()["detail"])


def test_bad_uploads_get_clear_errors(client, tmp_path):
    def post(name: str, data: bytes):
        return client.post("/generate-from-audio", files={"file": (name, data)})

    cases = [
        (post("notes.txt", b"this is not audio at all\n" * 50), 422, "not audio"),
        (post("empty.wav", b""), 422, "empty"),
        (post("silence.wav", media.wav_bytes(np.zeros(16_000, np.float32), 16_000)), 422,
         "silent"),
        (post("click.wav", media.wav_bytes(np.ones(800, np.float32) * 0.5, 16_000)), 422,
         "at least"),
        (post("huge.wav", os.urandom(1_200_000)), 413, "larger than the limit of 1.0 MB"),
        (client.post("/generate-from-audio"), 422, "file"),
    ]
    for resp, status, words in cases:
        assert resp.status_code == status, resp.text
        assert words in json.dumps(resp.json()["detail"])
    assert _state(client)["temp_files"] == 0


def test_upload_without_length_is_cut_off_at_the_limit(client):
    """A chunked body (no Content-Length) is counted while it is read."""

    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 65536

    resp = client.post("/generate-from-audio", content=body(),
                       headers={"content-type": "multipart/form-data; boundary=b"})
    assert resp.status_code == 413 and "limit" in resp.json()["detail"]


def test_json_bodies_are_capped_too(client):
    resp = client.post("/generate", content=b'{"text": "' + b"a" * 300_000 + b'"}',
                       headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_full_server_refuses_with_503_and_counts_it(client):
    worker = client.app.state.server.worker
    before = worker.counts["refused"]
    worker.active += worker.max_requests  # as if that many animations were running
    try:
        resp = client.get("/generate", params={"text": "hello"})
    finally:
        worker.active -= worker.max_requests
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert "busy" in resp.json()["detail"]
    assert worker.counts["refused"] == before + 1
    assert client.get("/generate", params={"text": "hello"}).status_code == 200


def test_unknown_person_fails_at_start_naming_the_known_ones(trained_person, tmp_path):
    with pytest.raises(infer.InferError, match=f"no trained person 'nobody'.*{trained_person.name}"):
        server.create_app(_settings(trained_person, tmp_path, name="nobody"))


@pytest.mark.parametrize("name", ["../etc", "a/b", "..", ".hidden", "x" * 65, ""])
def test_person_name_must_be_a_plain_folder_name(trained_person, tmp_path, name):
    with pytest.raises(ValidationError, match="name"):
        _settings(trained_person, tmp_path, name=name)


def test_settings_come_from_env_and_flags_win(monkeypatch, trained_person, tmp_path):
    monkeypatch.setenv("SYNCTALK_MAX_REQUESTS", "7")
    monkeypatch.setenv("SYNCTALK_HOST", "0.0.0.0")
    s = _settings(trained_person, tmp_path, host="127.0.0.1")
    assert s.max_requests == 7 and s.host == "127.0.0.1"
    assert server.ServerSettings(name="x").port == 8000
    monkeypatch.delenv("SYNCTALK_HOST")
    assert server.ServerSettings(name="x").host == "127.0.0.1"  # loopback unless told


def test_tts_audio_checks_voice_and_text_too(client):
    for params, words in [({"text": "hi", "voice": "en-us+zzz"}, "no variant"),
                          ({"text": "hi", "voice": "en-us+" + "a" * 37}, "characters"),
                          ({"text": "a\x00b"}, "NUL")]:
        resp = client.get("/get-tts-audio", params=params)
        assert resp.status_code == 422 and words in resp.json()["detail"]
    ok = client.get("/get-tts-audio", params={"text": "line one\n\tline two", "voice": "en-us+f3"})
    assert ok.status_code == 200


# ------------------------------------------------------------------------- hardening


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1", 200), ("127.0.0.1:8000", 200), ("localhost:1234", 200), ("LOCALHOST", 200),
    ("[::1]:8000", 200), ("evil.example", 400), ("evil.example:8000", 400),
    ("localhost.evil.example", 400), ("127.0.0.1.nip.io", 400), ("", 400)])
def test_only_loopback_host_names_are_answered_by_default(client, host, status):
    resp = client.get("/health", headers={"host": host})
    assert resp.status_code == status, resp.text
    if status == 400:
        assert "allowed-host" in resp.json()["detail"]


def test_allowed_hosts_are_configurable(trained_person, avatar, tmp_path):
    settings = _settings(trained_person, tmp_path, allowed_hosts=["avatar.lan"])
    with _client_for(settings, avatar) as c:
        assert c.get("/health", headers={"host": "avatar.lan:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "localhost"}).status_code == 400
    with _client_for(_settings(trained_person, tmp_path, allowed_hosts=["*"]), avatar) as c:
        assert c.get("/health", headers={"host": "anything.example"}).status_code == 200


def _resident_mb(path: Path) -> float:
    """Resident MB of this process's mappings of `path` (from /proc/self/smaps)."""
    kb, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) >= 5 and "-" in fields[0] and ":" in fields[3]:  # a mapping's header
            inside = len(fields) == 6 and fields[5] == str(path)
        elif inside and line.startswith("Rss:"):
            kb += int(line.split()[1])
    return kb / 1024


def test_an_idle_server_unmaps_the_crop_pages(client, avatar):
    """A long render leaves every crop of the memory-mapped cache in the server's RSS; once
    the last request ends the server drops them (they stay in the page cache)."""
    if not Path("/proc/self/smaps").is_file():
        pytest.skip("reads /proc/self/smaps (Linux)")
    path = avatar.dataset.paths.cached(avatar.dataset.meta["crops_file"]).resolve()
    int(np.asarray(avatar.crops).sum())  # every page resident, as after a long render
    before = _resident_mb(path)
    assert before > 0.9 * avatar.crops.nbytes / 2**20
    assert _lines(client.get("/generate", params={"text": "hello there"}))[-1]["type"] == "end"
    deadline = time.monotonic() + 5
    while (after := _resident_mb(path)) > 0.05 * before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert after <= 0.05 * before, f"{after:.1f} of {before:.1f} MB still resident"
    assert int(np.asarray(avatar.crops[:1]).sum()) >= 0  # still readable afterwards


def test_debug_changes_need_a_token_beyond_loopback(trained_person, avatar, tmp_path):
    on = {"enabled": True}
    with _client_for(_settings(trained_person, tmp_path, host="0.0.0.0"), avatar) as c:
        resp = c.post("/debug/config", json=on)
        assert resp.status_code == 403 and "--debug-token" in resp.json()["detail"]
        assert not c.get("/debug/status").json()["enabled"]
    settings = _settings(trained_person, tmp_path, host="0.0.0.0", debug_token="s3cret")
    with _client_for(settings, avatar) as c:
        for headers in ({}, {"X-Debug-Token": "wrong"}):
            assert c.post("/debug/config", json=on, headers=headers).status_code == 403
        resp = c.post("/debug/config", json=on, headers={"X-Debug-Token": "s3cret"})
        assert resp.status_code == 200 and resp.json()["enabled"]


def test_debug_status_needs_the_token_when_one_is_set(trained_person, avatar, tmp_path):
    settings = _settings(trained_person, tmp_path, debug_token="s3cret")
    with _client_for(settings, avatar) as c:
        for headers in ({}, {"X-Debug-Token": "wrong"}):
            resp = c.get("/debug/status", headers=headers)
            assert resp.status_code == 403 and "token" in resp.json()["detail"]
        status = c.get("/debug/status", headers={"X-Debug-Token": "s3cret"}).json()
        assert status["token_required"] and status["changeable"]
    # no token: readable, and the page is told whether the switches work
    with _client_for(_settings(trained_person, tmp_path, host="0.0.0.0"), avatar) as c:
        status = c.get("/debug/status").json()
        assert not status["token_required"] and not status["changeable"]
    with _client_for(_settings(trained_person, tmp_path), avatar) as c:
        assert c.get("/debug/status").json()["changeable"]


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def test_debug_saving_stays_within_its_limits(trained_person, avatar, tmp_path):
    per_request, total = 60_000, 150_000
    settings = _settings(trained_person, tmp_path, debug=True,
                         debug_max_request_mb=per_request / 2**20,
                         debug_max_total_mb=total / 2**20)
    with _client_for(settings, avatar) as c:
        ids = [_lines(c.get("/generate", params={"text": f"Debug number {i}."}))[0]["request"]
               for i in range(4)]
        status = c.get("/debug/status").json()
    debug = settings.debug_folder
    kept = sorted(p.name for p in debug.iterdir())
    assert kept == ids[-len(kept):] and ids[0] not in kept  # the oldest went first
    assert all(_folder_bytes(debug / i) <= per_request for i in kept)
    assert _folder_bytes(debug) <= total and status["saved_mb"] <= total / 2**20
    assert status["skipped_files"] > 0  # each request had more frames than its budget
    assert all((debug / i / "audio.wav").is_file() for i in kept)  # saved first


def test_a_request_past_its_deadline_is_cut_and_frees_its_slot(trained_person, avatar,
                                                               tmp_path):
    settings = _settings(trained_person, tmp_path, request_timeout_s=0.3)
    with _client_for(settings, avatar) as c:
        resp = c.post("/generate", json={"text": "A sentence that takes a while. " * 6})
        assert resp.status_code == 503 and "longer than 0.3 s" in resp.json()["detail"]
        status = c.get("/debug/status").json()
    assert status["requests"]["active"] == 0 and status["timeouts"]["deadline"] == 1
    assert status["temp_files"] == 0


# ------------------------------------------------------------------------- Piper


def _fake_piper_voice(folder: Path) -> Path:
    """A Piper-format voice whose 'speech' is a 220 Hz tone, 256 samples (at 22.05 kHz) per
    phoneme id times length_scale: real Piper code runs it, only the network is trivial."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    def const(name, value, kind=TensorProto.FLOAT):
        return helper.make_node("Constant", [], [name],
                                value=helper.make_tensor(name, kind, [], [value]))

    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        const("one", 1, TensorProto.INT64),
        helper.make_node("Gather", ["shape", "one"], ["n"]),
        helper.make_node("Cast", ["n"], ["n_f"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["scales", "one"], ["length_scale"]),
        const("hop", 256.0),
        helper.make_node("Mul", ["n_f", "hop"], ["n_hop"]),
        helper.make_node("Mul", ["n_hop", "length_scale"], ["len_f"]),
        const("zero", 0.0), const("step", 1.0),
        helper.make_node("Floor", ["len_f"], ["len_floor"]),
        helper.make_node("Range", ["zero", "len_floor", "step"], ["t"]),
        const("omega", float(2 * np.pi * 220 / 22050)),
        helper.make_node("Mul", ["t", "omega"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["wave"]),
        const("gain", 0.3),
        helper.make_node("Mul", ["wave", "gain"], ["quiet"]),
        helper.make_node("Reshape", ["quiet", "out_shape"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tone",
        [helper.make_tensor_value_info("input", TensorProto.INT64, [1, "n"]),
         helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "m"])],
        initializer=[helper.make_tensor("out_shape", TensorProto.INT64, [3], [1, 1, -1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "tone.onnx"
    onnx.save(model, path)
    config = {"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us"},
              "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
              "phoneme_type": "text", "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
              "num_symbols": 256, "num_speakers": 1}
    Path(f"{path}.json").write_text(json.dumps(config))
    return path


def test_piper_voice_replaces_espeak_when_configured(trained_person, tmp_path):
    pytest.importorskip("piper")
    voice = _fake_piper_voice(tmp_path)
    speaker = server.Speaker(_settings(trained_person, tmp_path, piper_model=voice), 16_000)
    assert speaker.describe()["engine"] == "piper" and speaker.voices() == ["tone"]
    normal, fast = speaker.speak("hello world"), speaker.speak("hello world", speed=2.0)
    assert normal.dtype == np.float32 and len(fast) == pytest.approx(len(normal) / 2, rel=0.02)
    spectrum = np.abs(np.fft.rfft(normal))
    assert np.argmax(spectrum) * 16_000 / len(normal) == pytest.approx(220, abs=3)  # resampled


def test_missing_piper_voice_is_a_clear_error(trained_person, tmp_path):
    pytest.importorskip("piper")
    with pytest.raises(tts.TTSError, match="not found"):
        server.Speaker(_settings(trained_person, tmp_path, piper_model=tmp_path / "no.onnx"),
                       16_000)


# ------------------------------------------------------------------------- real HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * 4096 / 2**20


SEND_TIMEOUT_S = 3.0  # the live server's, short so that the slow-reader test takes seconds
HEADER_TIMEOUT_S = 3.0  # the same for clients that send their headers slowly
MAX_CONNECTIONS = 30  # above the 20-client burst, low enough to fill with slow clients


@pytest.fixture(scope="module")
def live_server(trained_person, tmp_path_factory):
    """`python -m synctalk_lib serve` in a subprocess on a free loopback port."""
    if not Path("/proc/self/statm").is_file():
        pytest.skip("the load test reads memory from /proc (Linux)")
    tmp = tmp_path_factory.mktemp("live")
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SYNCTALK_TEMP_DIR": str(tmp / "server-tmp"),
           "SYNCTALK_MAX_TEXT_CHARS": "2000", "SYNCTALK_SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
           "SYNCTALK_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "SYNCTALK_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}
    cmd = [sys.executable, "-m", "synctalk_lib", "serve", "--name", trained_person.name,
           "--root", str(trained_person.dataset_root), "--checkpoints",
           str(trained_person.checkpoints_root), "--outputs", str(tmp / "outputs"),
           "--port", str(port), "--max-requests", "4", "--threads", "1"]
    log_path = tmp / "server.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, proc, tmp
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stream(url: str, text: str) -> tuple[int, str, float | None]:
    """(status, 'ok' or the refusal, seconds to the first frame) of one streamed animation."""
    t0 = time.perf_counter()
    with httpx.stream("GET", f"{url}/generate", params={"text": text}, timeout=120) as resp:
        if resp.status_code != 200:
            resp.read()
            return resp.status_code, resp.json()["detail"], None
        first, indices, meta, end = None, [], None, None
        for line in resp.iter_lines():
            msg = json.loads(line)
            if msg["type"] == "frame":
                first = first or time.perf_counter() - t0
                indices.append(msg["index"])
            elif msg["type"] == "meta":
                meta = msg
            elif msg["type"] in ("end", "error"):
                end = msg
    complete = end["type"] == "end" and indices == list(range(meta["n_frames"]))
    return 200, "ok" if complete else f"incomplete: {end}", first


def _burst(url: str, n: int = 20) -> list[tuple[int, str, float | None]]:
    """n animations requested at the same moment."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: _stream(url, f"Request {i}: hello there, friend."),
                             range(n)))


def _settled_rss(pid: int) -> float:
    time.sleep(0.5)  # the server trims its heap once the last request ends
    return _rss_mb(pid)


def test_twenty_concurrent_requests_are_served_or_refused_and_memory_returns(live_server):
    url, proc, tmp = live_server
    assert _stream(url, "Warming up the server.")[1] == "ok"
    cold = _settled_rss(proc.pid)
    _burst(url)  # the first burst sets the resting level (threads' allocator arenas)
    rest = _settled_rss(proc.pid)
    t0 = time.perf_counter()
    results = _burst(url)
    wall = time.perf_counter() - t0
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) + len(refused) == 20, results
    assert all(r[1] == "ok" for r in served), results
    assert all("busy" in r[1] for r in refused)
    assert len(served) >= 4  # the admitted ones always finish
    results += _burst(url)
    after = _settled_rss(proc.pid)
    assert sum(r[0] == 200 for r in results) >= 8
    status = httpx.get(f"{url}/debug/status").json()
    assert status["requests"]["active"] == 0 and status["temp_files"] == 0
    assert not list((tmp / "server-tmp").glob("*/*"))  # nothing left in the server's temp
    assert after < rest + 10, f"memory grew from {rest:.0f} to {after:.0f} MB"
    first_frames = sorted(r[2] for r in served)
    print(f"\n20 concurrent: {len(served)} served, {len(refused)} refused in {wall:.1f} s; "
          f"first frame {first_frames[0]:.2f}..{first_frames[-1]:.2f} s; memory {cold:.0f} MB "
          f"after one request, {rest:.0f} after a burst, {after:.0f} after two more")
    assert _stream(url, "Still alive?")[1] == "ok"


def test_client_that_disconnects_stops_the_work(live_server):
    url, _, _ = live_server
    text = "This sentence is long enough to take a good while to animate. " * 15
    with httpx.stream("GET", f"{url}/generate", params={"text": text}, timeout=60) as resp:
        for line in resp.iter_lines():
            msg = json.loads(line)
            if msg["type"] == "meta":
                n_frames = msg["n_frames"]
            if msg["type"] == "frame":
                break  # hang up after the first frame
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/debug/status").json()
        if status["requests"]["active"] == 0:
            break
        time.sleep(0.1)
    job = status["recent"][0]
    assert job["status"] == "cancelled" and job["frames_out"] < n_frames / 2
    assert status["requests"]["active"] == 0


def test_long_voice_variant_cannot_kill_the_server(live_server):
    """A 40-character variant used to abort the process inside libespeak-ng."""
    url, proc, _ = live_server
    for path in ("/get-tts-audio", "/generate"):
        resp = httpx.get(f"{url}{path}", params={"text": "hello", "voice": "en-us+" + "a" * 40},
                         timeout=30)
        assert resp.status_code == 422 and "unknown espeak-ng voice" in resp.json()["detail"]
    assert proc.poll() is None and httpx.get(f"{url}/health", timeout=5).status_code == 200


def test_a_client_that_stops_reading_loses_its_slot(live_server):
    """A raw socket with a tiny receive buffer reads ~2 KB/s: once the buffers are full, a
    write waits longer than the send timeout, and the request is cut while the client is
    still connected (before, it held its slot for as long as it kept reading slowly)."""
    url, _, _ = live_server
    host, port = url.removeprefix("http://").split(":")
    text = "This sentence is long enough to take a good while to animate. " * 15
    query = httpx.QueryParams({"text": text})
    before = [j["id"] for j in httpx.get(f"{url}/debug/status", timeout=5).json()["recent"]]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /generate?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    stop = threading.Event()
    received = []

    def read_slowly() -> None:
        while not stop.is_set():
            data = sock.recv(256)
            if not data:
                break
            received.append(len(data))
            time.sleep(0.125)  # 2 KB/s

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    t0 = time.monotonic()
    try:
        while True:
            status = httpx.get(f"{url}/debug/status", timeout=5).json()
            ours = [j for j in status["recent"] if j["id"] not in before]
            if ours and ours[0]["status"] != "running":
                break
            assert time.monotonic() - t0 < 6 * SEND_TIMEOUT_S, "the slow client kept its slot"
            time.sleep(0.2)
        freed = time.monotonic() - t0
        assert reader.is_alive()  # still connected and reading: a slow client, not a gone one
    finally:
        stop.set()
        sock.close()
    job = ours[0]
    assert job["status"] == "cancelled" and job["frames_out"] < job["n_frames"]
    assert status["requests"]["active"] == 0 and status["timeouts"]["send"] >= 1
    assert sum(received) < 200_000
    print(f"\nslow reader: slot freed after {freed:.1f} s, {sum(received)} bytes read")


def test_clients_that_send_headers_slowly_are_closed(live_server):
    """MAX_CONNECTIONS clients that never finish their headers fill uvicorn's connection limit
    (every other request gets 503); the header deadline closes them and the server answers
    again. Before it, uvicorn kept them open for as long as they kept trickling."""
    url, proc, _ = live_server
    host, port = url.removeprefix("http://").split(":")
    socks = []
    for _ in range(MAX_CONNECTIONS):
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sock.settimeout(0.25)
        socks.append(sock)
    t0 = time.monotonic()
    try:
        assert httpx.get(f"{url}/health", timeout=5).status_code == 503  # the limit is full
        open_socks = list(socks)
        while open_socks:
            assert time.monotonic() - t0 < 4 * HEADER_TIMEOUT_S, \
                f"{len(open_socks)} slow clients still connected"
            for sock in list(open_socks):
                try:
                    gone = sock.recv(1024) == b""
                except TimeoutError:
                    gone = False
                except OSError:
                    gone = True
                if not gone:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"a")  # one more header byte: still sending
                else:
                    open_socks.remove(sock)
        closed = time.monotonic() - t0
    finally:
        for sock in socks:
            sock.close()
    assert closed >= HEADER_TIMEOUT_S * 0.8  # not before the deadline
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200 and proc.poll() is None
    print(f"\n{MAX_CONNECTIONS} slow-header clients closed after {closed:.1f} s")


def test_server_stops_cleanly_and_removes_its_temp_folder(live_server):
    _, proc, tmp = live_server
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert not list((tmp / "server-tmp").iterdir())
