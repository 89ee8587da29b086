"""The web page in headless Chromium (Playwright driving the system browser): type text, see
the avatar speak; upload audio; see a server error. When Chromium is missing and we are root
on Debian/Ubuntu, the Debian package is installed first (~25 s; SYNCTALK_INSTALL_CHROMIUM=0
turns that off); otherwise, or without Playwright, the tests skip."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")

from helpers import CHROMIUM_ARGS, NO_CHROMIUM, chromium, free_port

from synctalk_lib import media, server

REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "outputs" / "server" / "screenshot.png"
CHROMIUM = chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)


@contextlib.contextmanager
def _serving(settings: server.ServerSettings) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a thread; yields its URL."""
    app = server.create_app(settings)
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not web.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        thread.join(15)


def _settings(trained_person, tmp: Path, **extra) -> server.ServerSettings:
    return server.ServerSettings(
        name=trained_person.name, dataset_root=trained_person.dataset_root,
        checkpoints_root=trained_person.checkpoints_root, output_root=tmp / "outputs",
        temp_dir=tmp / "server-tmp", **extra)


@pytest.fixture(scope="module")
def page_url(trained_person, tmp_path_factory):
    """The app for the test person, served on a free loopback port."""
    with _serving(_settings(trained_person, tmp_path_factory.mktemp("browser"))) as url:
        yield url


@pytest.fixture(scope="module")
def browser_page(page_url):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(page_url)
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        yield page, problems
        browser.close()


def _state(page) -> dict:
    return page.evaluate("() => ({...window.synctalk})")


def _canvas_spread(page) -> float:
    """Standard deviation of the canvas pixels: 0 for a blank (never drawn) canvas."""
    return page.evaluate("""() => {
        const c = document.getElementById('screen');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0, s2 = 0, n = 0;
        for (let i = 0; i < d.length; i += 4 * 7) { s += d[i]; s2 += d[i] * d[i]; n++; }
        return Math.sqrt(s2 / n - (s / n) ** 2);
    }""")


def test_typed_text_plays_frames_with_the_speech(browser_page, trained_person):
    page, problems = browser_page
    assert page.text_content("#person") == trained_person.name
    assert _canvas_spread(page) > 10  # the still frame is shown before anything is asked
    page.fill("#text", "Hello from the browser test. The avatar is speaking now.")
    page.click("#speak")
    page.wait_for_function("() => window.synctalk.phase === 'playing'", timeout=20_000)
    first = _state(page)
    page.wait_for_function("() => ['done', 'error'].includes(window.synctalk.phase)",
                           timeout=60_000)
    state = _state(page)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert state["error"] is None and state["phase"] == "done", state
    assert state["nFrames"] > 50 and state["framesReceived"] == state["nFrames"]
    assert state["framesDrawn"] >= 0.6 * state["nFrames"]  # played, not just downloaded
    # pictures keep up with the sound's clock (a loaded machine may delay a few draws)
    assert state["lateFrames"] <= 0.1 * state["framesDrawn"], state
    assert first["firstFrameMs"] < 5000
    assert _canvas_spread(page) > 10
    assert "done" in page.text_content("#status")
    assert not problems, problems
    print(f"\nbrowser: {state['framesDrawn']}/{state['nFrames']} frames drawn "
          f"({state['lateFrames']} late, worst {state['maxLagFrames']}), first frame "
          f"{state['firstFrameMs']:.0f} ms after the request, clock {state['clock']}")


def test_uploaded_audio_plays_too(browser_page, trained_person, tmp_path):
    page, problems = browser_page
    wav = media.load_audio(trained_person.heldout_wav)[:16_000 * 2]
    upload = tmp_path / "speech.wav"
    media.save_wav(upload, wav, 16_000)
    page.set_input_files("#audio-file", str(upload))
    page.click("#upload")
    page.wait_for_function("() => window.synctalk.phase === 'done' || "
                           "window.synctalk.phase === 'error'", timeout=60_000)
    state = _state(page)
    assert state["error"] is None and state["nFrames"] == 50 and state["framesReceived"] == 50
    assert not problems, problems


def test_download_button_makes_an_mp4(browser_page):
    page, problems = browser_page
    page.fill("#text", "Save this as a video.")
    page.click("#make-mp4")
    page.wait_for_selector("#mp4-link:not([hidden])", timeout=60_000)
    assert "MB)" in page.text_content("#mp4-link")
    size = page.evaluate("async () => (await (await fetch(document.getElementById('mp4-link')"
                         ".href)).blob()).size")
    assert size > 10_000 and not problems


def test_api_docs_render_without_network(browser_page, page_url):
    page, _ = browser_page
    docs = page.context.browser.new_page()
    docs.route("**/*", lambda route: route.abort() if not route.request.url.startswith(page_url)
               else route.continue_())  # as if offline: only our server answers
    docs.goto(f"{page_url}/docs")
    docs.wait_for_selector("text=/generate-from-audio", timeout=20_000)
    docs.close()


def test_server_errors_are_shown_on_the_page(browser_page):
    page, _ = browser_page
    page.fill("#text", "   ")
    page.click("#speak")
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    assert "text is empty" in page.text_content("#error")
    assert _state(page)["phase"] == "error"


def test_debug_panel_switches_saving_on_and_off(browser_page):
    page, _ = browser_page
    page.click("#debug-panel summary")
    page.check("#debug-enabled")
    page.wait_for_function("() => document.getElementById('debug-status').textContent"
                           ".includes('\"enabled\": true')", timeout=10_000)
    page.uncheck("#debug-enabled")
    page.wait_for_function("() => document.getElementById('debug-status').textContent"
                           ".includes('\"enabled\": false')", timeout=10_000)


def test_debug_panel_asks_for_the_token_of_a_server_that_has_one(browser_page, trained_person,
                                                                 tmp_path):
    """With --debug-token, /debug/* answers 403 without it: the switches stay disabled with a
    note until the operator types the token, which the page then sends."""
    settings = _settings(trained_person, tmp_path, debug_token="s3cret")
    with _serving(settings) as url:
        page = browser_page[0].context.browser.new_page()  # the module's browser
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=20_000)
        page.click("#debug-panel summary")
        page.click("#debug-refresh")
        page.wait_for_selector("#debug-note:not([hidden])", timeout=10_000)
        assert "operator's token" in page.text_content("#debug-note")
        assert page.is_disabled("#debug-enabled")
        page.fill("#debug-token", "s3cret")
        page.click("#debug-refresh")  # the field's change event fires as it loses focus here
        page.wait_for_function("() => document.getElementById('debug-status').textContent"
                               ".includes('\"token_required\": true')", timeout=10_000)
        assert page.is_enabled("#debug-enabled") and page.is_hidden("#debug-note")
        page.check("#debug-enabled")
        page.wait_for_function("() => document.getElementById('debug-status').textContent"
                               ".includes('\"enabled\": true')", timeout=10_000)
        page.close()
