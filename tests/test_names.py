"""Names that explain themselves: a module's name means that module wherever it is used."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synctalk_lib"
MODULES = sorted(p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
SIBLINGS = {p.stem for p in MODULES}
# module-level names that begin with their module's name but read as verb + object
VERB_PHRASES = {"check_recording", "crop_face", "discriminator_loss", "evaluate_clip",
                "progress_bar", "train_generator", "train_person"}


def _module_aliases(tree: ast.Module) -> set[str]:
    """Names the file binds to sibling modules (`from . import x` / `from . import x as y`)."""
    return {a.asname or a.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
            for a in node.names}


class _Bindings(ast.NodeVisitor):
    """(line, name) of every parameter and assigned name in functions and at module level;
    class bodies are skipped (dataclass fields and class attributes are attributes)."""

    def __init__(self) -> None:
        self.found: list[tuple[int, str]] = []
        self.in_class = False

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        outer, self.in_class = self.in_class, True
        self.generic_visit(node)
        self.in_class = outer

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
        self.found += [(node.lineno, p.arg) for p in params if p is not None]
        outer, self.in_class = self.in_class, False
        self.generic_visit(node)
        self.in_class = outer

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store) and not self.in_class:
            self.found.append((node.lineno, node.id))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_variable_shadows_a_module_its_file_imports(path):
    tree = ast.parse(path.read_text())
    aliases = _module_aliases(tree)
    bindings = _Bindings()
    bindings.visit(tree)
    shadows = sorted({(line, name) for line, name in bindings.found if name in aliases})
    assert shadows == [], f"{path.name}: rename these variables: {shadows}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_function_is_named_like_a_sibling_module_or_repeats_its_own(path):
    tree = ast.parse(path.read_text())
    defs = [n.name for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert [d for d in defs if d in SIBLINGS - {path.stem}] == []
    assert [d for d in defs if d.startswith(path.stem + "_") and d not in VERB_PHRASES] == []
