"""Check that every citation of a file under docs/ resolves, and every relative link in the docs.

Code, tests and guides cite documentation as `docs/<file>.md` or `docs/<file>.md §N` (also
`§3-§4` and `§4, §5, §7`). This script finds each such citation in synctalk_lib/, tests/,
bench/, scripts/, notebooks/, README.md and docs/, and reports one whose file does not exist
or whose section number is not a numbered heading of that file (`## 3. Title`). It also checks
the relative links and images of README.md and docs/*.md (`[text](docs/<file>.md#anchor)`): the
target must exist, and an anchor must be a heading of the target or an `id` in it. The old
design file outside the repository must no longer be cited at all.

Standard library only:

    python scripts/check_citations.py [--root REPO]    # exit 1 and one line per problem
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

SCAN_DIRS = ("synctalk_lib", "tests", "bench", "scripts", "notebooks", "docs")
SCAN_FILES = ("README.md",)
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".sh", ".js", ".css", ".html", ".toml", ".txt"}
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints"}
# the design notes' old name and place (../shared); spelled in two parts so that this file
# does not cite it itself
OLD_DESIGN = "DESIGN" + ".md"

# docs/<path>.<ext>, not inside a longer path or URL (".../x/docs/y.md")
CITATION = re.compile(r"(?<![\w/.-])docs/([\w./-]*[\w-]\.(?:md|png|jpe?g|gif|svg))")
# right after a citation: "§3", then more as ", §5", "-§4", "–§4" or " and §7"
FIRST_SECTION = re.compile(r"\s*§\s*(\d+)")
MORE_SECTIONS = re.compile(r"\s*(,|-|–|and|to)\s*§\s*(\d+)")
# a numbered heading: "## 3. Title", "## §3 Title", "## 3) Title"
NUMBERED_HEADING = re.compile(r"^#{1,6}\s+§?\s*(\d+)[.)\s]")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"""<a\s+(?:id|name)\s*=\s*["']([^"']+)["']""")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Problem:
    path: str  # relative to the root
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def scanned_files(root: Path) -> list[Path]:
    """The text files whose citations are checked, in a stable order."""
    files = [root / name for name in SCAN_FILES if (root / name).is_file()]
    for name in SCAN_DIRS:
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if (path.is_file() and path.suffix in TEXT_SUFFIXES
                    and not SKIP_DIRS.intersection(path.relative_to(root).parts)):
                files.append(path)
    return files


def _blank_code(text: str, inline: bool = True) -> str:
    """Markdown with fenced blocks (and inline code spans) blanked out, line count kept."""
    out, fenced = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            out.append("")
        elif fenced:
            out.append("")
        else:
            out.append(line)
    text = "\n".join(out)
    if not inline:
        return text
    return re.sub(r"`[^`\n]*(?:\n[^`\n]+)*?`", lambda m: "\n" * m.group().count("\n"), text)


def heading_slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link keeps its text
    title = re.sub(r"<[^>]+>", "", title).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@dataclass
class MarkdownFile:
    sections: set[int]  # numbers of numbered headings
    anchors: set[str]  # heading slugs (with GitHub's -1, -2 for repeats) and explicit ids

    @classmethod
    def read(cls, path: Path) -> MarkdownFile:
        text = _blank_code(path.read_text(encoding="utf-8"), inline=False)  # headings keep code
        sections, anchors, seen = set(), set(), {}
        for line in text.split("\n"):
            anchors.update(HTML_ID.findall(line))
            numbered = NUMBERED_HEADING.match(line)
            if numbered:
                sections.add(int(numbered.group(1)))
            heading = HEADING.match(line)
            if heading:
                slug = heading_slug(heading.group(2))
                count = seen.get(slug, 0)
                seen[slug] = count + 1
                anchors.add(slug if count == 0 else f"{slug}-{count}")
        return cls(sections, anchors)


class Docs:
    """Markdown files read once each."""

    def __init__(self) -> None:
        self._cache: dict[Path, MarkdownFile] = {}

    def __getitem__(self, path: Path) -> MarkdownFile:
        path = path.resolve()
        if path not in self._cache:
            self._cache[path] = MarkdownFile.read(path)
        return self._cache[path]


def _sections_cited(text: str, end: int) -> list[int]:
    """Section numbers right after a citation ending at `end`: §3, §3-§5 (3, 4, 5), §4, §7."""
    first = FIRST_SECTION.match(text, end)
    if not first:
        return []
    numbers, pos = [int(first.group(1))], first.end()
    while more := MORE_SECTIONS.match(text, pos):
        n = int(more.group(2))
        if more.group(1) in "-–" and numbers[-1] < n <= numbers[-1] + 50:
            numbers += range(numbers[-1] + 1, n + 1)
        else:
            numbers.append(n)
        pos = more.end()
    return numbers


def _describe(sections: set[int]) -> str:
    return ", ".join(f"§{n}" for n in sorted(sections)) or "none"


def check_citations(path: Path, root: Path, docs: Docs) -> list[Problem]:
    """Citations of docs/ files in one file, and any mention of the old design file."""
    rel = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8", errors="replace")
    line_of = _line_index(text)
    problems = []
    for match in re.finditer(re.escape(OLD_DESIGN), text):
        problems.append(Problem(rel, line_of(match.start()),
                                f"{OLD_DESIGN} is no longer in use: cite docs/design.md §N"))
    for match in CITATION.finditer(text):
        cited = match.group(1)
        target = root / "docs" / cited
        line = line_of(match.start())
        if not target.is_file():
            problems.append(Problem(rel, line, f"docs/{cited} does not exist"))
            continue
        numbers = _sections_cited(text, match.end()) if target.suffix == ".md" else []
        if numbers:
            have = docs[target].sections
            for n in numbers:
                if n not in have:
                    problems.append(Problem(rel, line, f"docs/{cited} has no section §{n} "
                                            f"(its numbered sections: {_describe(have)})"))
    return problems


def check_links(path: Path, root: Path, docs: Docs) -> list[Problem]:
    """Relative links and images of one markdown file: the file exists, the anchor too."""
    rel = path.relative_to(root).as_posix()
    text = _blank_code(path.read_text(encoding="utf-8"))
    line_of = _line_index(text)
    problems = []
    for match in LINK.finditer(text):
        href = match.group(1)
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", href) or href.startswith("//"):
            continue  # http:, https:, mailto: …
        file_part, _, anchor = href.partition("#")
        target = (path.parent / file_part) if file_part else path
        line = line_of(match.start())
        if not target.exists():
            problems.append(Problem(rel, line, f"link target {href} does not exist"))
        elif anchor and target.suffix == ".md" and anchor not in docs[target].anchors:
            problems.append(Problem(rel, line, f"link {href}: {target.name} has no heading "
                                    f"or id #{anchor}"))
    return problems


def _line_index(text: str):
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def line_of(offset: int) -> int:
        lo, hi = 0, len(starts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if starts[mid] <= offset else (lo, mid)
        return lo + 1

    return line_of


def check(root: str | Path) -> list[Problem]:
    """Every problem under `root` (a repository checkout), by file and line."""
    root = Path(root).resolve()
    docs = Docs()
    problems = []
    for path in scanned_files(root):
        found = check_citations(path, root, docs)
        if path.suffix == ".md":
            found += check_links(path, root, docs)
        problems += sorted(found, key=lambda p: p.line)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=Path(__file__).resolve().parent.parent, type=Path,
                        help="repository root (default: this script's repository)")
    args = parser.parse_args(argv)
    problems = check(args.root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} citation or link problem(s); fix the reference or the target",
              file=sys.stderr)
        return 1
    print(f"citations and links resolve ({len(scanned_files(args.root))} files checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
