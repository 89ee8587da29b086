"use strict";
// Plays the server's animation stream (NDJSON, described at /docs): one "meta" line, the whole
// speech as a wav, then JPEG frames in order. Frame t is drawn while the audio clock is in
// [t / fps, (t + 1) / fps), so picture and sound stay aligned; if a frame has not arrived when
// its time comes, the sound pauses until it does. No libraries: fetch, Audio and a canvas.

const $ = (id) => document.getElementById(id);
const START_BUFFER = 3; // frames received before playback starts
const STUCK_AUDIO_MS = 800; // an audio clock that does not move for this long is replaced
const DECODE_AHEAD = 5; // JPEGs decoded before their time (a few MB of bitmaps at most)

// Read by the browser test and handy in the console.
const state = (window.synctalk = {
  phase: "idle", // idle | loading | playing | buffering | done | error | stopped
  framesReceived: 0,
  framesDrawn: 0,
  nFrames: 0,
  firstFrameMs: null, // request sent -> first frame received
  clock: null, // "audio" (the sound's own clock) or "wall" (sound blocked or absent)
  maxLagFrames: 0, // worst distance between the clock's frame and the one on screen
  lateFrames: 0, // frames drawn more than 2 frames (80 ms) away from the clock
  error: null,
  runs: 0,
});

const canvas = $("screen");
const ctx2d = canvas.getContext("2d");
let current = null; // the Run in progress

function setStatus(text) {
  $("status").textContent = text;
}

function showError(message) {
  state.error = message;
  state.phase = "error";
  $("error").textContent = message;
  $("error").hidden = false;
  setStatus("error");
}

function clearError() {
  state.error = null;
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(busy) {
  for (const id of ["speak", "upload", "make-mp4"]) $(id).disabled = busy;
  $("stop").disabled = !busy;
}

async function errorDetail(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail.map((d) => `${(d.loc || []).slice(-1)[0]}: ${d.msg}`).join("; ");
    }
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${resp.status} ${resp.statusText}`;
}

function bytesOf(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function updateProgress(run) {
  const n = state.nFrames || 1;
  $("progress").max = n;
  $("progress").value = state.framesReceived;
  const first = state.firstFrameMs === null ? "" : ` · first frame after ${(state.firstFrameMs / 1000).toFixed(2)} s`;
  const playing = run && run.started ? ` · ${run.time().toFixed(1)} / ${run.meta.duration.toFixed(1)} s` : "";
  $("progress-text").textContent = `${state.framesReceived} / ${state.nFrames} frames${first}${playing}`;
}

class Run {
  constructor() {
    this.ctrl = new AbortController();
    this.blobs = new Map(); // index -> JPEG Blob (compressed: a long clip stays small)
    this.bitmaps = new Map(); // index -> Promise<ImageBitmap>, only a few ahead of the clock
    this.meta = null;
    this.audio = null;
    this.highest = -1; // highest frame index received
    this.shown = -1; // index asked for
    this.drawn = -1; // index on the canvas
    this.started = false;
    this.ended = false; // the server sent "end"
    this.failed = false;
    this.stopped = false;
    this.finished = false;
    this.buffering = false;
    this.t0 = performance.now();
    this.wallBase = 0; // wall clock: seconds played before the last (re)start
    this.wallStart = null;
    this.lastAudioTime = -1;
    this.lastAudioMove = 0;
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  async fetchAndPlay(url, init) {
    const resp = await fetch(url, { ...init, signal: this.ctrl.signal });
    if (!resp.ok) throw new Error(await errorDetail(resp));
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) this.handle(JSON.parse(line));
      }
    }
    if (this.failed) return;
    if (!this.ended) throw new Error("the stream ended early (did the server stop?)");
    if (!this.started && this.highest >= 0) this.play();
    await this.done;
  }

  handle(msg) {
    if (msg.type === "meta") {
      this.meta = msg;
      state.nFrames = msg.n_frames;
      canvas.width = msg.width;
      canvas.height = msg.height;
      setStatus("generating…");
    } else if (msg.type === "audio") {
      const blob = new Blob([bytesOf(msg.data)], { type: msg.mime });
      this.audioUrl = URL.createObjectURL(blob);
      this.audio = new Audio(this.audioUrl);
      this.audio.preload = "auto";
    } else if (msg.type === "frame") {
      this.blobs.set(msg.index, new Blob([bytesOf(msg.data)], { type: "image/jpeg" }));
      this.highest = msg.index;
      state.framesReceived += 1;
      if (state.firstFrameMs === null) state.firstFrameMs = performance.now() - this.t0;
      if (!this.started && (this.blobs.size >= START_BUFFER || msg.index === state.nFrames - 1)) {
        this.play();
      }
      updateProgress(this);
    } else if (msg.type === "end") {
      this.ended = true;
      this.serverFirstFrame = msg.first_frame_s;
    } else if (msg.type === "error") {
      this.failed = true;
      this.stop("error");
      showError(msg.detail);
    }
  }

  // -- clock
  time() {
    if (state.clock === "wall") {
      const running = this.wallStart === null ? 0 : (performance.now() - this.wallStart) / 1000;
      return this.wallBase + running;
    }
    return this.audio ? this.audio.currentTime : 0;
  }

  useWallClock(reason) {
    if (state.clock === "wall") return;
    this.wallBase = this.audio ? this.audio.currentTime : 0;
    this.wallStart = this.buffering ? null : performance.now();
    state.clock = "wall";
    if (this.audio) this.audio.pause();
    console.warn(`playing without sound: ${reason}`);
  }

  play() {
    this.started = true;
    state.phase = "playing";
    setStatus("playing");
    state.clock = "audio";
    this.lastAudioMove = performance.now();
    this.audio.play().catch((err) => this.useWallClock(err.message));
    requestAnimationFrame(() => this.tick());
  }

  pause() {
    this.buffering = true;
    state.phase = "buffering";
    setStatus("buffering…");
    if (state.clock === "wall") {
      this.wallBase = this.time();
      this.wallStart = null;
    } else {
      this.audio.pause();
    }
  }

  resume() {
    this.buffering = false;
    state.phase = "playing";
    setStatus("playing");
    if (state.clock === "wall") this.wallStart = performance.now();
    else this.audio.play().catch((err) => this.useWallClock(err.message));
  }

  // -- drawing
  bitmap(index) {
    if (!this.bitmaps.has(index) && this.blobs.has(index)) {
      this.bitmaps.set(index, createImageBitmap(this.blobs.get(index)));
    }
    return this.bitmaps.get(index);
  }

  show(index) {
    this.shown = index;
    for (let k = index + 1; k <= index + DECODE_AHEAD; k++) this.bitmap(k);
    this.bitmap(index).then((bmp) => {
      if (this.stopped || index < this.drawn) return;
      this.drawn = index;
      ctx2d.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      state.framesDrawn += 1;
      const lag = Math.abs(Math.floor(this.time() * this.meta.fps) - index);
      state.maxLagFrames = Math.max(state.maxLagFrames, Math.min(lag, this.meta.n_frames));
      if (lag > 2) state.lateFrames += 1;
    });
    for (const k of [...this.bitmaps.keys()]) {
      if (k < index) {
        this.bitmaps.get(k).then((bmp) => bmp.close());
        this.bitmaps.delete(k);
        this.blobs.delete(k);
      }
    }
  }

  tick() {
    if (this.stopped || this.finished) return;
    const { fps, n_frames: n, duration } = this.meta;
    this.watchAudio();
    const t = this.time();
    const index = Math.min(n - 1, Math.floor(t * fps));
    if (index <= this.highest) {
      if (this.buffering) this.resume();
      if (index !== this.shown) this.show(index);
    } else if (!this.buffering) {
      this.pause(); // the frame for this moment has not arrived yet
    }
    updateProgress(this);
    const over = state.clock === "wall" ? t >= duration : this.audio.ended || t >= duration;
    if (over && this.shown === n - 1) this.finish();
    else requestAnimationFrame(() => this.tick());
  }

  watchAudio() {
    // Some machines have no audio output: its clock then never moves. Fall back to the wall.
    if (state.clock !== "audio" || this.buffering || this.audio.ended) return;
    const now = performance.now();
    if (this.audio.currentTime !== this.lastAudioTime) {
      this.lastAudioTime = this.audio.currentTime;
      this.lastAudioMove = now;
    } else if (now - this.lastAudioMove > STUCK_AUDIO_MS) {
      this.useWallClock("the audio clock is not moving (no sound device?)");
    }
  }

  finish() {
    this.finished = true;
    state.phase = "done";
    const first = (state.firstFrameMs / 1000).toFixed(2);
    setStatus(`done: ${state.framesDrawn} frames shown, first frame after ${first} s` +
      (state.clock === "wall" ? " (without sound)" : ""));
    this.cleanup();
  }

  stop(phase) {
    this.stopped = true;
    this.ctrl.abort();
    if (this.audio) this.audio.pause();
    state.phase = phase;
    this.cleanup();
  }

  cleanup() {
    if (this.audioUrl) URL.revokeObjectURL(this.audioUrl);
    for (const p of this.bitmaps.values()) p.then((bmp) => bmp.close());
    this.bitmaps.clear();
    this.blobs.clear();
    this.resolveDone();
  }
}

async function animate(url, init) {
  if (current) current.stop("stopped");
  clearError();
  Object.assign(state, {
    phase: "loading", framesReceived: 0, framesDrawn: 0, nFrames: 0, firstFrameMs: null,
    clock: null, maxLagFrames: 0, lateFrames: 0,
  });
  state.runs += 1;
  setStatus("sending…");
  updateProgress(null);
  setBusy(true);
  const run = (current = new Run());
  try {
    await run.fetchAndPlay(url, init);
  } catch (err) {
    if (!run.stopped) {
      run.stop("error");
      showError(err.message);
    }
  } finally {
    if (current === run) {
      current = null;
      setBusy(false);
    }
    refreshDebug();
  }
}

function speechParams() {
  return { text: $("text").value, voice: $("voice").value || undefined, speed: Number($("speed").value) };
}

$("speak-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const { text, voice, speed } = speechParams();
  const query = new URLSearchParams({ text, speed: String(speed) });
  if (voice) query.set("voice", voice);
  animate(`/generate?${query}`, {});
});

$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("audio-file").files[0];
  if (!file) {
    showError("choose an audio file first");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  animate("/generate-from-audio?stream=true", { method: "POST", body: form });
});

$("stop").addEventListener("click", () => {
  if (current) {
    current.stop("stopped");
    setStatus("stopped");
  }
});

$("speed").addEventListener("input", () => {
  $("speed-out").textContent = `${Number($("speed").value).toFixed(1)}×`;
});

$("make-mp4").addEventListener("click", async () => {
  clearError();
  setBusy(true);
  setStatus("rendering the mp4…");
  const t0 = performance.now();
  try {
    const resp = await fetch("/generate", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(speechParams()),
    });
    if (!resp.ok) throw new Error(await errorDetail(resp));
    const blob = await resp.blob();
    const link = $("mp4-link");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `avatar-${resp.headers.get("X-Request-Id") || "video"}.mp4`;
    link.textContent = `save the video (${(blob.size / 1e6).toFixed(1)} MB)`;
    link.hidden = false;
    setStatus(`mp4 ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } catch (err) {
    showError(err.message);
  } finally {
    setBusy(false);
    $("stop").disabled = true;
    refreshDebug();
  }
});

// -- debug panel
// A server started with --debug-token answers /debug/* only to requests carrying it; the
// token typed here stays in this page (memory only) and goes in the X-Debug-Token header.
const DEBUG_SWITCHES = ["debug-enabled", "debug-save-frames", "debug-save-audio"];

function debugHeaders() {
  const token = $("debug-token").value;
  return token ? { "X-Debug-Token": token } : {};
}

function lockDebug(note) {
  for (const id of DEBUG_SWITCHES) $(id).disabled = Boolean(note);
  $("debug-note").hidden = !note;
  $("debug-note").textContent = note || "";
}

async function refreshDebug() {
  try {
    const resp = await fetch("/debug/status", { headers: debugHeaders() });
    if (resp.status === 403) {
      lockDebug("This server keeps debug to its operator: type the operator's token above.");
      $("debug-status").textContent = await errorDetail(resp);
      return;
    }
    const status = await resp.json();
    $("debug-enabled").checked = status.enabled;
    $("debug-save-frames").checked = status.save_frames;
    $("debug-save-audio").checked = status.save_audio;
    $("debug-folder").textContent = status.folder;
    $("debug-status").textContent = JSON.stringify(status, null, 1);
    lockDebug(status.changeable ? "" : "Debug settings are fixed on this server: it is " +
      "reachable from the network and was started without --debug-token.");
  } catch (err) {
    $("debug-status").textContent = `cannot read /debug/status: ${err.message}`;
  }
}

async function setDebug(change) {
  const resp = await fetch("/debug/config", {
    method: "POST",
    headers: { "Content-Type": "application/json", ...debugHeaders() },
    body: JSON.stringify(change),
  });
  if (!resp.ok) showError(await errorDetail(resp));
  refreshDebug();
}

$("debug-enabled").addEventListener("change", (e) => setDebug({ enabled: e.target.checked }));
$("debug-save-frames").addEventListener("change", (e) => setDebug({ save_frames: e.target.checked }));
$("debug-save-audio").addEventListener("change", (e) => setDebug({ save_audio: e.target.checked }));
$("debug-refresh").addEventListener("click", refreshDebug);
$("debug-token").addEventListener("change", refreshDebug);

// -- start-up: model info, voices, the still frame
async function init() {
  try {
    const health = await (await fetch("/health")).json();
    $("person").textContent = health.name;
    $("model-info").textContent = `${health.checkpoint} · ${health.backend} · device ${health.device}` +
      ` · ${health.frame_size.join("×")} at ${health.fps} fps · speech: ${health.tts.engine}`;
    $("text").maxLength = health.tts.max_text_chars;
    const voices = await (await fetch("/voices")).json();
    for (const name of voices.voices) {
      const option = new Option(name, name, false, name === voices.voice);
      $("voice").add(option);
    }
    const still = await createImageBitmap(await (await fetch("/avatar")).blob());
    canvas.width = still.width;
    canvas.height = still.height;
    ctx2d.drawImage(still, 0, 0);
    still.close();
    document.body.dataset.ready = "true";
  } catch (err) {
    showError(`cannot reach the server: ${err.message}`);
  }
  refreshDebug();
}

init();
