"""The preview widget in JupyterLab in headless Chromium (Playwright driving the system
browser), started the way `make lab` starts it (scripts/lab.sh, through
scripts/lab_session.py).

Notebook 04 itself, pointed at the small trained person of the fixtures (its parameters
injected as papermill injects them), is opened and Run All; the test finds the widget, checks
that every view fits a 1000-px-high window without moving anything, presses play and samples
in the page, every few milliseconds, the `<audio>` element's `currentTime` against the frame the
widget has painted (its canvas's `data-frame`), scrubs, and saves a screenshot to
outputs/preview/. A second, one-cell notebook plays a 6 s clip whose frames carry their own
number: longer than the person's 1 s tail, so a drift would add up, and the number read from
the canvas's pixels checks that `data-frame` is the frame really painted.

How the samples are judged (docs/preview_widget.md): a sample taken when the page last
refreshed at most one frame (40 ms) earlier must be within one frame of the sound, all of them;
a sample taken after a longer gap (the renderer starved of CPU: a stall) may be behind by the
frames the gap explains and no more. Stalls are counted and printed; the clip must end on its
last frame. Skips where Chromium, Playwright or JupyterLab can't be had."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
pytest.importorskip("anywidget")
papermill_parameterize = pytest.importorskip("papermill.parameterize")
papermill_iorw = pytest.importorskip("papermill.iorw")
nbformat = pytest.importorskip("nbformat")

from helpers import CHROMIUM_ARGS, NO_CHROMIUM, chromium

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "outputs" / "preview"
NOTEBOOK_04 = "04_evaluate_sync.ipynb"
CHROMIUM = chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)


def _lab_session():
    spec = importlib.util.spec_from_file_location("lab_session",
                                                  REPO / "scripts" / "lab_session.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lab_session = _lab_session()
WINDOW = lab_session.WINDOW
FPS, HEIGHT = 25, 256  # notebook 04 shows every set 256 px high

N_NUMBERED, BITS, BLOCK = 150, 8, 24  # 6 s; the frame number in 8 blocks of 24 px
NUMBERED_CELL = f"""
import numpy as np
from skimage import data, transform
from synctalk_lib import widgets

photo = (transform.resize(data.astronaut(), (256, 256)) * 255).astype(np.uint8)
real = np.repeat(photo[None], {N_NUMBERED}, axis=0)
for i in range({N_NUMBERED}):
    for b in range({BITS}):
        real[i, :{BLOCK}, b * {BLOCK}:(b + 1) * {BLOCK}] = 255 if (i >> b) & 1 else 0
generated = real[:, :, ::-1].copy()
t = np.arange({N_NUMBERED} * 16000 // {FPS}) / 16000
wav = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
widgets.preview({{"real": real, "generated": generated}}, wav, title="numbered frames")
"""

# Started before play is pressed, it samples on its own timer (not the widget's animation
# frames) until the widget stops playing; `bits` > 0 also reads the number drawn in the blocks.
# Samples start at the widget's first refresh of this play.
START_SAMPLER = """(bits) => {
    const root = document.querySelector('.stp-root');
    const canvas = root.querySelector('canvas'), audio = root.querySelector('audio');
    const ctx = canvas.getContext('2d', {willReadFrequently: true});
    const installed = performance.now();
    const read = () => {
        const now = performance.now(), tick = Number(root.dataset.tick || 0);
        const s = {now, time: audio.currentTime, frame: Number(canvas.dataset.frame),
                   tick, since: now - tick, fresh: tick > installed, ended: audio.ended,
                   playing: root.dataset.playing === 'true', late: Number(root.dataset.late)};
        if (bits) {
            const block = BLOCK, d = ctx.getImageData(0, block / 2, bits * block, 1).data;
            let n = 0;
            for (let b = 0; b < bits; b++) if (d[4 * (b * block + block / 2)] > 127) n |= 1 << b;
            s.drawn = n;
        }
        return s;
    };
    window.stpSampling = new Promise((done) => {
        const samples = [];
        const finish = () => { clearInterval(timer); done({samples, end: read()}); };
        const timer = setInterval(() => {
            const s = read();
            if (s.playing && s.fresh) samples.push(s);
            else if (samples.length && !s.playing) finish();
        }, 4);
        setTimeout(finish, 60000);
    });
}""".replace("BLOCK", str(BLOCK))

BOXES = """() => {
    const root = document.querySelector('.stp-root');
    const box = (node) => { const r = node.getBoundingClientRect();
                            return [r.x, r.y, r.width, r.height]; };
    const canvas = root.querySelector('canvas'), caption = root.querySelector('.stp-caption');
    return {root: box(root), stage: box(canvas), pixels: [canvas.width, canvas.height],
            wave: box(root.querySelector('.stp-wave')), caption: box(caption),
            captionScroll: caption.scrollWidth, views: [...root.querySelectorAll('.stp-view')]
            .map(b => [b.textContent, b.scrollWidth <= b.clientWidth + 1])};
}"""
FRAME = "() => Number(document.querySelector('.stp-root canvas').dataset.frame)"
DRAWN = "() => document.querySelector('.stp-root canvas')?.dataset.frame === '0'"


def _notebook_04(folder: Path, person, outputs: Path) -> None:
    """notebooks/04 with the fixture person's parameters injected after its parameters cell,
    as papermill (`make demo`) injects them; the voice report (a minute of rendering other
    voices) is off."""
    nb = papermill_iorw.load_notebook_node(str(REPO / "notebooks" / NOTEBOOK_04))
    nb = papermill_parameterize.parameterize_notebook(nb, {
        "name": person.name, "dataset_root": str(person.dataset_root),
        "checkpoints_root": str(person.checkpoints_root), "outputs_root": str(outputs),
        "voice_report": False})
    nbformat.write(nb, folder / NOTEBOOK_04)


def _numbered_notebook(folder: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NUMBERED_CELL.strip())])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nbformat.write(nb, folder / "numbered.ipynb")


@pytest.fixture(scope="session")
def chromium_starts() -> None:
    """Skips where the system Chromium does not start under Playwright. Session-scoped like
    the trained person and asked for before it, so it runs first: no person is trained for
    tests that would skip."""
    with sync_api.sync_playwright() as pw:
        try:
            pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS).close()
        except sync_api.Error as e:
            pytest.skip(f"{CHROMIUM} does not start under Playwright: {str(e).splitlines()[0]}")


@pytest.fixture(scope="module")
def lab(chromium_starts, trained_person, tmp_path_factory):
    """JupyterLab started by scripts/lab.sh on a free port, serving a folder with notebook 04
    (pointed at the trained person) and the numbered-frames notebook."""
    tmp = tmp_path_factory.mktemp("lab")
    (tmp / "notebooks").mkdir()
    _notebook_04(tmp / "notebooks", trained_person, tmp / "outputs")
    _numbered_notebook(tmp / "notebooks")
    with lab_session.lab_server(tmp / "notebooks", tmp / "state") as server:
        yield server


@pytest.fixture(scope="module")
def page(chromium_starts):
    """One browser tab; `problems` collects page errors and the widget's console errors."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport=WINDOW)
        tab.problems = []
        tab.on("pageerror", lambda e: tab.problems.append(str(e)))
        tab.on("console", lambda m: tab.problems.append(m.text) if m.type == "error" and any(
            k in m.text for k in ("anywidget", "preview", "widget", "stp-")) else None)
        yield tab
        browser.close()


@pytest.fixture(scope="module")
def notebook_04(lab, page):
    """Notebook 04 after Run All in JupyterLab, its widget drawn and scrolled into view."""
    run = lab_session.run_all(page, lab, NOTEBOOK_04, timeout_ms=180_000)
    page.wait_for_function(DRAWN, timeout=30_000)
    page.locator(".stp-root").scroll_into_view_if_needed()
    print(f"\nnotebook 04: Run All in {run.seconds:.1f} s (from opening it), "
          f"{run.executed}/{run.code_cells} code cells, errors: {run.errors or 'none'}")
    return run, page


def _play(page, bits: int = 0) -> tuple[list[dict], dict]:
    """Press play from frame 0 and sample until the clip ends."""
    page.evaluate("() => { const a = document.querySelector('.stp-root audio');"
                  " a.currentTime = 0; }")
    page.evaluate(START_SAMPLER, bits)
    page.click(".stp-play")
    result = page.evaluate("() => window.stpSampling")
    return result["samples"], result["end"]


def _median_step(values: list[float]) -> float:
    """Median step between successive distinct values (refresh times, clock readings)."""
    distinct = sorted(set(values))
    steps = sorted(b - a for a, b in itertools.pairwise(distinct))
    return steps[len(steps) // 2] if steps else math.nan


def _judge(samples: list[dict], end: dict, n_frames: int) -> str:
    """Assert the picture followed the sound (module docstring); returns a one-line account."""
    frame_ms = 1000 / FPS
    playing = [s for s in samples if not s["ended"]]
    error = {id(s): s["frame"] - math.floor(s["time"] * FPS + 1e-6) for s in playing}
    live = [s for s in playing if s["since"] <= frame_ms]
    stalls = [s for s in playing if s["since"] > frame_ms]
    account = (
        f"{len(playing)} samples over {playing[0]['time']:.2f}-{playing[-1]['time']:.2f} s; "
        f"picture minus sound with the page refreshing: "
        f"{dict(sorted(Counter(error[id(s)] for s in live).items()))}; "
        f"{len(stalls)} samples in page stalls (longest {max([0] + [s['since'] for s in stalls]):.0f}"
        f" ms: {dict(sorted(Counter(error[id(s)] for s in stalls).items()))}); "
        f"{len({s['frame'] for s in playing})} distinct frames seen, page refreshes every "
        f"{_median_step([s['tick'] for s in playing]):.0f} ms and currentTime "
        f"steps {1000 * _median_step([s['time'] for s in playing]):.0f} ms (medians), "
        f"{end['late']} late "
        f"refreshes; the end: frame {end['frame']} at {end['time']:.2f} s")
    duration = n_frames / FPS
    assert len(live) >= 20, account
    assert live[0]["time"] < 0.25 and live[-1]["time"] > duration - 0.25, account
    assert all(abs(error[id(s)]) <= 1 for s in live), account
    # in a stall the picture is the last refresh's: behind by what the gap explains, no more
    assert all(-(math.ceil(s["since"] / frame_ms) + 1) <= error[id(s)] <= 1
               for s in stalls), account
    assert end["ended"] and end["frame"] == n_frames - 1, account
    assert len({s["frame"] for s in playing}) > 0.5 * n_frames, account  # it moved, not jumped
    return account


def test_lab_prints_the_address_with_its_token(lab):
    assert f"{lab.url}/lab?token={lab.token}" in lab.log.read_text()


def test_notebook_04_runs_all_in_jupyterlab(notebook_04):
    run, page = notebook_04
    assert run.finished and not run.errors, run.errors
    assert run.executed == run.code_cells
    assert not page.problems, page.problems


def test_every_view_fits_the_window_at_a_fixed_size(notebook_04):
    _, page = notebook_04
    boxes = {}
    for view in ("real", "generated", "side by side"):
        page.click(f".stp-view:text-is('{view}')")
        page.wait_for_function(f"() => document.querySelector('.stp-view.stp-on').textContent"
                               f" === '{view}'")
        boxes[view] = page.evaluate(BOXES)
    first = boxes["side by side"]
    _, _, width, height = first["stage"]
    assert first["pixels"] == [width, height] and height == HEIGHT  # drawn 1:1, not stretched
    assert width == 2 * HEIGHT + 4  # the demo is square: two 256 px sets and the gap
    assert first["wave"][2] == width  # the waveform under the pictures, as wide
    for view, box in boxes.items():
        assert box["root"][3] <= WINDOW["height"], (view, box)
        assert box["stage"] == first["stage"] and box["root"] == first["root"], view  # no jumps
        assert box["captionScroll"] <= box["caption"][2] + 1  # nothing cut off
        assert all(fits for _, fits in box["views"]), box["views"]
    print(f"\nnotebook 04's widget: {first['root'][2]:.0f}x{first['root'][3]:.0f} px in every"
          f" view")
    assert not page.problems, page.problems


def test_play_keeps_notebook_04s_picture_on_the_sound(notebook_04):
    _, page = notebook_04
    n = int(page.get_attribute(".stp-slider", "max")) + 1
    samples, end = _play(page)
    print(f"\nnotebook 04, {n} frames: {_judge(samples, end, n)}")
    assert not page.problems, page.problems


def test_scrubbing_notebook_04_shows_the_frame_and_moves_the_sound(notebook_04):
    _, page = notebook_04
    n = int(page.get_attribute(".stp-slider", "max")) + 1
    k = n // 2
    slider = page.locator(".stp-slider")
    slider.evaluate(f"(s) => {{ s.value = '{k}'; s.dispatchEvent(new Event('input')); }}")
    page.wait_for_function(f"() => ({FRAME})() === {k}", timeout=10_000)
    assert abs(page.evaluate("() => document.querySelector('.stp-root audio').currentTime")
               - k / FPS) < 1e-3
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"() => ({FRAME})() === {k + 1}", timeout=10_000)
    assert f"frame {k + 1} / {n - 1}" in page.text_content(".stp-caption")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "notebook04.png"
    page.locator(".stp-root").screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    assert not page.problems, page.problems


def test_the_painted_frame_follows_the_sound_over_six_seconds(lab, page):
    page.evaluate(lab_session.SHUT_DOWN)  # notebook 04's kernel, if open: free the cores
    started = time.monotonic()
    run = lab_session.run_all(page, lab, "numbered.ipynb")
    assert run.finished, run.errors
    page.wait_for_function(DRAWN, timeout=30_000)
    page.locator(".stp-root").scroll_into_view_if_needed()
    samples, end = _play(page, BITS)
    account = _judge(samples, end, N_NUMBERED)
    print(f"\nnumbered clip, {N_NUMBERED} frames (open to end {time.monotonic() - started:.0f}"
          f" s): {account}")
    wrong = [(s["frame"], s["drawn"]) for s in samples if s["drawn"] != s["frame"]]
    assert not wrong, wrong[:10]  # data-frame names the frame whose pixels are on the canvas
    assert not page.problems, page.problems
