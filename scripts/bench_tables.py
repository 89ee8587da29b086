"""Write the generated tables of docs/benchmarks.md from the committed bench/results/*.json.

Each table sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in the page and is
replaced whole, so the figures in the docs are always those of a committed result file, with
the machine it ran on. Run it after a bench script has written its JSON:

    .venv/bin/python scripts/bench_tables.py [--check]   # --check: exit 1 if a table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"


def _machine(m: dict) -> str:
    load = ", ".join(f"{x:g}" for x in m.get("load_average", []))
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('date', '?')}, " \
           f"load average at the start {load}"


def _fmt(x: float | None, unit: str = "") -> str:
    return "–" if x is None else f"{x:g}{unit}"


def infer_table(result: dict) -> str:
    """bench/infer.py: one line per case."""
    lines = [f"`bench/results/infer.json`: {_machine(result['machine'])}.", "",
             "| case | audio s | frames/s | × ref loop | peak RSS MB |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| `{r['case']}` | {r['audio_s']:g} | {r['fps']:g} | "
                     f"{_fmt(r.get('ratio_vs_reference_loop'), '×')} | {r['peak_rss_mb']} |")
    return "\n".join(lines)


def _crf(row: dict) -> str:
    return "" if row.get("crf") is None else f", CRF {row['crf']}"


def compare_table(result: dict) -> str:
    """bench/compare_main.py: this code against another checkout, same run."""
    title = (f"`bench/results/{result.get('file', 'compare_main.json')}` (against `{Path(result['other']).name}`): "
             f"{_machine(result['machine'])}.")
    lines = [title, "",
             ("| preset, source | frames/s, ours | frames/s, theirs | × | CPU ms a frame, ours "
              "| theirs | PSNR min / mean dB | face box PSNR min / mean dB |"),
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| `{r['preset']}`, {r['source']}{_crf(r)} | {' / '.join(map(str, r['fps_ours']))} | "
            f"{' / '.join(map(str, r['fps_other']))} | {r['ratio']:g}× | "
            f"{' / '.join(map(str, r['cpu_ms_per_frame_ours']))} | "
            f"{' / '.join(map(str, r['cpu_ms_per_frame_other']))} | "
            f"{r['psnr_min']:g} / {r['psnr_mean']:g} | "
            f"{r['face_psnr_min']:g} / {r['face_psnr_mean']:g} |")
    return "\n".join(lines)


def server_table(result: dict) -> str:
    """bench/server_load.py: N concurrent streams."""
    lines = [f"`bench/results/server_load.json`: {_machine(result['machine'])}.", "",
             "| concurrent streams | frames/s per stream | first frame, s | all real time |",
             "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['streams']} | {' / '.join(map(str, r['fps_per_stream']))} | "
                     f"{' / '.join(map(str, r['first_frame_s']))} | "
                     f"{'yes' if r['real_time'] else 'no'} |")
    return "\n".join(lines)


TABLES = {"infer": ("infer.json", infer_table),
          "compare_main": ("compare_main.json", compare_table),
          "compare_main_lossless": ("compare_main_lossless.json", compare_table),
          "server_load": ("server_load.json", server_table)}


def render(page: str) -> str:
    """The page with every table whose result file exists regenerated."""
    for name, (file, make) in TABLES.items():
        path = RESULTS / file
        if not path.is_file():
            continue
        table = make(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- bench:{name} -->).*?(<!-- /bench:{name} -->)", re.DOTALL)
        page = pattern.sub(lambda m, t=table: f"{m[1]}\n{t}\n{m[2]}", page)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    old = PAGE.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"{PAGE} is stale: run scripts/bench_tables.py")
            return 1
        return 0
    PAGE.write_text(new)
    print(f"updated {PAGE}" if new != old else f"{PAGE} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
