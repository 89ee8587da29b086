// Browser half of synctalk_lib.widgets.LipSyncPreview (an anywidget ES module).
// The <audio> element is the clock: on every screen refresh while playing, the frame for
// audio.currentTime is drawn if it has arrived, otherwise the last one stays up and is counted
// as late; the picture never runs behind the sound by more than the frames that are missing.
// Frames come from the kernel in batches of `batch`, asked for just ahead of the playhead and
// dropped again when far from it, so a long clip stays light. State for tests and curious
// users: the canvas's data-frame is the frame painted on it (set in the same call that paints
// it), and the root element has data-playing, data-late (refreshes whose frame had not
// arrived), data-tick (performance.now() of the last refresh while playing) and data-cached
// (frames held).

const KEEP_BATCHES = 12; // decoded batches kept around the playhead

function el(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

function blobUrl(view, type) {
  return view && view.byteLength ? URL.createObjectURL(new Blob([view], { type })) : "";
}

function render({ model, el: host }) {
  const n = model.get("n_frames");
  const fps = model.get("fps");
  const batch = Math.max(1, model.get("batch"));
  const sizes = model.get("sizes");
  const labels = model.get("labels");
  const gap = model.get("gap");
  const width = sizes.reduce((s, [w]) => s + w, 0) + gap * (sizes.length - 1);
  const height = Math.max(...sizes.map(([, h]) => h));
  const urls = [];

  const root = el("div", "stp-root", host);
  root.tabIndex = 0;
  root.dataset.lmSuppressShortcuts = "true"; // keys here are ours, not the notebook's
  root.style.setProperty("--stp-width", `${Math.max(width, 320)}px`);
  if (model.get("title")) el("div", "stp-title", root).textContent = model.get("title");
  const canvas = el("canvas", "stp-stage", root);
  canvas.width = width;
  canvas.height = height;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);

  const wave = el("div", "stp-wave", root);
  wave.style.width = `${width}px`;
  const waveImg = el("img", "", wave);
  waveImg.src = blobUrl(model.get("wave_png"), "image/png");
  waveImg.width = width;
  waveImg.draggable = false;
  urls.push(waveImg.src);
  const cursor = el("div", "stp-cursor", wave);

  const controls = el("div", "stp-controls", root);
  const playButton = el("button", "stp-play", controls);
  playButton.type = "button";
  const slider = el("input", "stp-slider", controls);
  Object.assign(slider, { type: "range", min: 0, max: n - 1, step: 1, value: 0 });
  slider.setAttribute("aria-label", "frame");
  const viewBar = el("div", "stp-views", root);
  const viewButtons = model.get("views").map((name) => {
    const b = el("button", "stp-view", viewBar);
    b.type = "button";
    b.textContent = name;
    b.addEventListener("click", () => { model.set("view", name); model.save_changes(); });
    return b;
  });
  const caption = el("div", "stp-caption", root);

  const audioBytes = model.get("audio_wav");
  const audio = audioBytes.byteLength ? el("audio", "stp-audio", root) : null;
  if (audio) {
    audio.preload = "auto";
    audio.src = blobUrl(audioBytes, "audio/wav");
    urls.push(audio.src);
  }

  const frames = new Map(); // frame -> [ImageBitmap per set]
  const asked = new Set(); // batch starts asked for (or arrived)
  let shown = -1, wanted = 0, playing = false, late = 0, raf = 0, t0 = 0, tStart = 0;
  let onReady = null; // resolves play() once the first frame is there

  function ask(i) {
    const start = Math.floor(i / batch) * batch;
    for (const s of [start, start + batch]) {
      if (s < n && !asked.has(s)) {
        asked.add(s);
        model.send({ type: "frames", start: s, stop: Math.min(s + batch, n) });
      }
    }
  }

  function forgetFar() {
    const here = Math.floor(wanted / batch) * batch;
    for (const s of [...asked]) {
      if (Math.abs(s - here) <= (KEEP_BATCHES / 2) * batch) continue;
      asked.delete(s);
      for (let i = s; i < s + batch; i++) {
        (frames.get(i) || []).forEach((b) => b.close());
        frames.delete(i);
      }
    }
  }

  model.on("msg:custom", async (msg, buffers) => {
    if (msg.type !== "frames" || !asked.has(msg.start)) return; // dropped while on its way
    const k = labels.length;
    const decoded = await Promise.all(buffers.map(
      (b) => createImageBitmap(new Blob([b], { type: "image/jpeg" }))));
    if (!asked.has(msg.start)) { decoded.forEach((b) => b.close()); return; }
    for (let i = msg.start; i < msg.stop; i++) {
      const j = (i - msg.start) * k;
      frames.set(i, decoded.slice(j, j + k));
    }
    if (!playing && shown !== wanted) draw(wanted);
    if (onReady && frames.has(wanted)) { onReady(); onReady = null; }
    forgetFar();
    root.dataset.cached = String(frames.size);
  });

  function describe(i) {
    const scores = model.get("scores");
    let text = `frame ${i} / ${n - 1} · ${(i / fps).toFixed(2)} s`;
    if (i < scores.length && scores[i] !== null) {
      text += ` · ${model.get("score_label")} ${scores[i].toFixed(2)}`;
    }
    if (late) text += ` · ${late} late`;
    return text;
  }

  function draw(i) {
    const bitmaps = frames.get(i);
    if (!bitmaps) return false;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, width, height);
    const view = model.get("view");
    const which = labels.includes(view) ? [labels.indexOf(view)] : labels.map((_, k) => k);
    let x = 0;
    for (const k of which) {
      ctx.drawImage(bitmaps[k], x, 0, sizes[k][0], sizes[k][1]);
      x += sizes[k][0] + gap;
    }
    shown = i;
    canvas.dataset.frame = String(i);
    slider.value = String(i);
    cursor.style.left = `${Math.min(Math.floor((i + 0.5) * width / n), width - 1) - 1}px`;
    caption.textContent = describe(i);
    return true;
  }

  function clock() {
    return audio ? audio.currentTime : tStart + (performance.now() - t0) / 1000;
  }

  function tick() {
    if (!playing) return;
    const i = Math.min(Math.floor(clock() * fps + 1e-6), n - 1);
    if (i !== wanted) {
      wanted = i;
      ask(i + batch); // keep a batch or two ahead of the playhead
      ask(i);
    }
    if (shown !== i && !draw(i)) late += 1;
    root.dataset.late = String(late);
    root.dataset.tick = String(performance.now()); // when the page last got to refresh
    const ended = audio ? audio.ended : clock() * fps >= n;
    if (ended) stop(); else raf = requestAnimationFrame(tick);
  }

  async function play() {
    if (playing) return;
    const start = wanted >= n - 1 ? 0 : Math.max(wanted, 0);
    go(start);
    if (!frames.has(start)) await new Promise((ok) => { onReady = ok; });
    playing = true;
    late = 0;
    root.dataset.playing = "true";
    playButton.textContent = "❚❚ pause";
    if (audio) {
      audio.currentTime = start / fps;
      try { await audio.play(); } catch (e) { console.warn("preview: audio did not start", e); }
    } else {
      t0 = performance.now();
      tStart = start / fps;
    }
    raf = requestAnimationFrame(tick);
  }

  function stop() {
    if (audio && !audio.paused) audio.pause();
    cancelAnimationFrame(raf);
    playing = false;
    root.dataset.playing = "false";
    playButton.textContent = "▶ play";
    if (shown >= 0 && model.get("index") !== shown) {
      model.set("index", shown);
      model.save_changes();
    }
  }

  function go(i) {
    i = Math.max(0, Math.min(n - 1, Math.round(i)));
    wanted = i;
    ask(i);
    if (!draw(i)) slider.value = String(i);
    if (audio && !playing) audio.currentTime = i / fps;
  }

  function scrub(i) {
    if (playing) stop();
    go(i);
    model.set("index", Math.max(0, Math.min(n - 1, i)));
    model.save_changes();
  }

  function markView() {
    const view = model.get("view");
    viewButtons.forEach((b) => b.classList.toggle("stp-on", b.textContent === view));
  }

  playButton.addEventListener("click", () => (playing ? stop() : play()));
  slider.addEventListener("input", () => scrub(Number(slider.value)));
  wave.addEventListener("click", (e) => {
    scrub(Math.floor((e.clientX - wave.getBoundingClientRect().left) / width * n));
  });
  // space plays or pauses, arrows step, Home/End jump; the notebook does not see these keys
  const keys = { " ": () => (playing ? stop() : play()), ArrowRight: () => scrub(wanted + 1),
    ArrowLeft: () => scrub(wanted - 1), Home: () => scrub(0), End: () => scrub(n - 1) };
  root.addEventListener("keydown", (e) => {
    if (!keys[e.key]) return;
    e.preventDefault();
    e.stopPropagation();
    keys[e.key]();
  });
  if (audio) audio.addEventListener("ended", () => { if (playing) tick(); });
  model.on("change:view", () => { markView(); draw(shown >= 0 ? shown : wanted); });
  model.on("change:index", () => {
    const i = model.get("index");
    if (!playing && i !== shown) go(i);
  });

  playButton.textContent = "▶ play";
  root.dataset.playing = "false";
  root.dataset.late = "0";
  markView();
  caption.textContent = describe(model.get("index"));
  go(model.get("index"));

  return () => {
    stop();
    frames.forEach((bs) => bs.forEach((b) => b.close()));
    urls.forEach((u) => u && URL.revokeObjectURL(u));
  };
}

export default { render };
