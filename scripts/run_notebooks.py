"""Run every notebook in notebooks/ through papermill, in order, on its defaults.

`make demo` calls this; the executed notebooks land in --out and each notebook writes its own
artefacts under outputs/<name>/. Extra `-p key value` pairs go to every notebook.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import papermill
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
# the kernel talks to us over local IPC sockets, not TCP on loopback: nothing else on the
# machine can connect to it, and ipykernel has no "running over TCP without encryption" warning
KERNEL_CONFIG = Config({"KernelManager": {"transport": "ipc"}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "demo")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                        help="parameter passed to every notebook (papermill -p)")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args()
    notebooks = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    params = {k: _literal(v) for k, v in args.p}
    args.out.mkdir(parents=True, exist_ok=True)
    for nb in notebooks:
        target = args.out / nb.name
        start = time.perf_counter()
        print(f"running {nb.name} -> {target}", flush=True)
        papermill.execute_notebook(str(nb), str(target), parameters=params,
                                   cwd=str(nb.parent), progress_bar=False, config=KERNEL_CONFIG)
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


def _literal(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


if __name__ == "__main__":
    sys.exit(main())
