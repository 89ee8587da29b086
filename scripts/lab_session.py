"""Run notebooks the way a person does in JupyterLab: open each one, Run All, read what it did.

JupyterLab is started by scripts/lab.sh (what `make lab` runs) on a free loopback port, with
its own config, data, runtime, settings and workspace folders, and autosave off, so a run
neither sees nor changes the user's JupyterLab and never writes outputs into a notebook. Headless
Chromium (the system one, through Playwright) drives it. The browser test of the preview
widget uses these pieces; as a script it runs notebooks one after another and prints how long
each took and any errors, e.g.

    SYNCTALK_DEMO_MINUTES=2 .venv/bin/python scripts/lab_session.py \
        notebooks/01_preprocess.ipynb notebooks/02_train.ipynb notebooks/03_infer.ipynb

(each notebook's executed copy goes to --out, default outputs/lab/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]
WINDOW = {"width": 1280, "height": 1000}
LAB_OPTIONS = ["--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
# user settings of the run's own JupyterLab: Run All never saves outputs into a notebook, and
# no "get notified about Jupyter news?" popup (it would ask the internet, and covers the page)
SETTINGS = {"docmanager-extension/plugin": {"autosave": False},
            "apputils-extension/notification": {"fetchNews": "false",
                                                "checkForUpdates": False}}
# the notebook shown in the main area, once its kernel is up and waiting
KERNEL_IDLE = ("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
               " return !!w && !!w.sessionContext && w.context.path === PATH"
               " && w.sessionContext.session?.kernel?.status === 'idle'; }")
RUN_ALL = ("async () => { const ok = await window.jupyterapp.commands.execute("
           "'notebook:run-all-cells'); return ok !== false; }")
NOTEBOOK_JSON = "() => window.jupyterapp.shell.currentWidget.content.model.toJSON()"
# the notebook in the main area closed and its kernel shut down (frees the cores)
SHUT_DOWN = ("async () => { const w = window.jupyterapp?.shell.currentWidget;"
             " if (w && w.sessionContext) { await w.sessionContext.shutdown(); w.dispose(); } }")


@dataclass(frozen=True)
class Lab:
    """A running JupyterLab: its address, token, log and the folder it serves."""

    url: str
    token: str
    log: Path
    root: Path

    def notebook_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"


@dataclass(frozen=True)
class NotebookRun:
    """What Run All did: seconds from opening to the last cell done, its errors, its cells."""

    path: str
    seconds: float
    finished: bool  # Run All went through every cell (it stops at the first error)
    errors: list[str]
    executed: int
    code_cells: int
    notebook: dict[str, Any]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@contextmanager
def lab_server(root: Path, work: Path, env: dict[str, str] | None = None,
               timeout: float = 60) -> Iterator[Lab]:
    """JupyterLab serving `root`, its state kept in `work`; `env` is added to its (and so its
    kernels') environment. The worktree's synctalk_lib comes first on the kernels' path."""
    for plugin, values in SETTINGS.items():
        target = work / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))
    port, token = free_port(), f"lab-session-{os.getpid()}"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PORT": str(port), "NO_BROWSER": "1", "JUPYTER_TOKEN": token,
                "LAB_DIR": str(root), "PYTHONPATH": path,
                "JUPYTER_CONFIG_DIR": str(work / "config"),
                "JUPYTER_DATA_DIR": str(work / "data"),
                "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
                "JUPYTERLAB_SETTINGS_DIR": str(work / "settings"),
                "JUPYTERLAB_WORKSPACES_DIR": str(work / "workspaces"), **(env or {})}
    log_path = work / "lab.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "lab.sh"), *LAB_OPTIONS],
                                cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                        break
                except OSError as e:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("JupyterLab did not start:\n"
                                           + log_path.read_text()) from e
                    time.sleep(0.3)
            yield Lab(url, token, log_path, Path(root))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def open_notebook(page: Any, lab: Lab, path: str, timeout_ms: float = 90_000) -> None:
    """Open `path` (relative to the served folder) and wait for its kernel to be idle; in a
    tab where JupyterLab is already up it opens as File > Open does, without reloading it."""
    if page.url.startswith(lab.url) and page.evaluate("() => !!window.jupyterapp"):
        page.evaluate("(path) => window.jupyterapp.commands.execute('docmanager:open',"
                      " {path, factory: 'Notebook'})", path)
    else:
        page.goto(lab.notebook_url(path))
    page.wait_for_function(KERNEL_IDLE.replace("PATH", json.dumps(path)), timeout=timeout_ms)


def run_all(page: Any, lab: Lab, path: str, timeout_ms: float = 90_000) -> NotebookRun:
    """Open `path`, Run All as the menu does, and wait for it to stop (done or an error)."""
    started = time.monotonic()
    open_notebook(page, lab, path, timeout_ms)
    finished = page.evaluate(RUN_ALL)
    seconds = time.monotonic() - started
    nb = page.evaluate(NOTEBOOK_JSON)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    errors = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}"
              for i, c in enumerate(nb["cells"]) for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    executed = sum(c.get("execution_count") is not None for c in code)
    return NotebookRun(path, seconds, bool(finished) and not errors, errors, executed,
                       len(code), nb)


def shoot_widget(page: Any, frame: int, path: Path) -> None:
    """A screenshot of the (first) preview widget, scrubbed to `frame`."""
    widget = page.locator(".stp-root").first
    widget.scroll_into_view_if_needed()
    widget.locator(".stp-slider").evaluate(
        f"(s) => {{ s.value = '{frame}'; s.dispatchEvent(new Event('input')); }}")
    page.wait_for_function(f"() => document.querySelector('.stp-root canvas')"
                           f".dataset.frame === '{frame}'", timeout=30_000)
    widget.screenshot(path=str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path, help="notebooks in notebooks/")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "lab")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per notebook")
    parser.add_argument("--widget-frame", type=int, default=0,
                        help="a preview widget in the notebook is shown at this frame for its "
                             "screenshot (<notebook>_widget.png)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        print("no Chromium on this machine (Debian: apt-get install -y chromium)")
        return 2
    folder = ROOT / "notebooks"
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with lab_server(folder, args.out / "state") as lab, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=WINDOW)
        page.on("pageerror", lambda e: print(f"  page error: {e}", flush=True))
        for nb in args.notebooks:
            name = nb.resolve().relative_to(folder).as_posix()
            print(f"Run All: {name}", flush=True)
            run = run_all(page, lab, name, args.timeout * 1000)
            (args.out / nb.name).write_text(json.dumps(run.notebook, indent=1))
            page.screenshot(path=str(args.out / f"{nb.stem}.png"))
            if run.finished and page.locator(".stp-root").count():
                shoot_widget(page, args.widget_frame, args.out / f"{nb.stem}_widget.png")
            print(f"  {'done' if run.finished else 'STOPPED'} in {run.seconds:.0f} s, "
                  f"{run.executed}/{run.code_cells} code cells run, errors: "
                  f"{run.errors or 'none'}", flush=True)
            failed += not run.finished
            page.evaluate(SHUT_DOWN)
        browser.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
