"""Which of the project's requirements resolve to wheels for Python 3.13 on x86-64 Linux.

Reads pyproject.toml (runtime dependencies plus the `dev` extra, torch aside: set-up installs
it first with its own pin), evaluates their markers for the target Python, and asks pip, with
binary wheels only and no build from source:
1. each requirement alone (`--no-deps`): which wheel it would take, or why none fits;
2. the whole set with dependencies resolved together, as `make setup` would install it.
Set-up's extra packages are checked alone too: mediapipe==0.10.21 (installed with --no-deps on
Python < 3.13 only) shows why it cannot be on 3.13.

pip runs as `pip install --dry-run --report` (the resolution of `pip download`, without
fetching the wheels). With `--python PATH` it is that interpreter's own pip (the truth for that
machine); otherwise this interpreter's pip cross-resolves for `--python-version` and the
manylinux platforms below (pip then evaluates the markers of dependencies' dependencies for
the interpreter it runs on; the top-level markers are evaluated here for the target).

    .venv/bin/python scripts/check_py313.py [--python-version 3.13] [--python /usr/bin/python3.13]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

try:
    from packaging.requirements import Requirement
except ModuleNotFoundError:
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
SKIP = {"torch"}  # installed first by scripts/setup_venv.sh with an exact (CPU) pin
SETUP_EXTRAS = ["mediapipe==0.10.21"]  # what setup_venv.sh installs beyond pyproject
# a manylinux_2_28 machine (e.g. Debian 12, Ubuntu 20.04+) takes every older manylinux tag;
# pip 23 does not widen an explicit --platform, so they are listed
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def requirements(python_version: str) -> list[str]:
    """pyproject's runtime + dev requirements that apply on `python_version`, markers removed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = {"python_version": python_version, "python_full_version": f"{python_version}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "os_name": "posix", "extra": ""}
    out = []
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(line)
        if req.name in SKIP or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        req.marker = None
        out.append(str(req))
    return out


def pip_resolve(reqs: list[str], args: argparse.Namespace, deps: bool) -> tuple[bool, str]:
    """(resolved?, one line: the wheels taken, or pip's error)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [args.python or sys.executable, "-m", "pip", "install", "--dry-run",
               "--ignore-installed", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", "--report", str(report)]
        if not args.python:
            cmd += ["--target", str(Path(tmp) / "t"), "--python-version", args.python_version,
                    *[f"--platform={p}" for p in PLATFORMS]]
        if not deps:
            cmd.append("--no-deps")
        proc = subprocess.run(cmd + reqs, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
            return False, " / ".join(errors) or proc.stderr.strip()[-300:]
        installed = json.loads(report.read_text())["install"]
        return True, ", ".join(Path(i["download_info"]["url"]).name for i in installed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python-version", default="3.13", help="target Python (cross-resolve)")
    p.add_argument("--python", help="resolve with this interpreter's own pip instead")
    args = p.parse_args()
    if args.python:
        args.python_version = subprocess.run(
            [args.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, check=True).stdout.strip()
    reqs = requirements(args.python_version)
    print(f"Python {args.python_version}, x86-64 Linux, binary wheels only "
          f"({'pip of ' + args.python if args.python else 'cross-resolved'})")
    failed = 0
    for req in reqs + SETUP_EXTRAS:
        ok, what = pip_resolve([req], args, deps=False)
        failed += not ok and req not in SETUP_EXTRAS
        extra = "  (setup, Python < 3.13 only)" if req in SETUP_EXTRAS else ""
        print(f"{'ok  ' if ok else 'FAIL'} {req}{extra}: {what}")
    ok, what = pip_resolve(reqs, args, deps=True)
    verdict = f"resolves, {len(what.split(', '))} wheels" if ok else f"FAILS\n{what}"
    print(f"\nthe whole set with dependencies: {verdict}")
    print(f"{len(reqs) - failed} of {len(reqs)} requirements resolve alone")
    sys.exit(0 if ok and not failed else 1)


if __name__ == "__main__":
    main()
