"""The package's shape as a specification: small modules, imports that flow one way.

Layers, outermost first: the workflow's scripts -> `nuwa.paper` (the paper's tables, figures and
claims ledger) -> `nuwa.interpret` (interpretation tools) -> the `nuwa` core a user imports.
A layer may import the layers below it, never one above; within the package there is no
import cycle, counting imports inside functions too.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nuwa"
MAX_LINES = 350
LAYERS = {"paper": 2, "interpret": 1}  # everything else in nuwa/ is the core, layer 0


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, name: str, known: set[str]) -> set[str]:
    """The nuwa modules `path` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imported(p, n, set(mods)) for n, p in mods.items()}


def test_no_module_of_the_package_is_longer_than_350_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}


def test_the_core_never_imports_the_paper_or_interpretation_layers(graph):
    upward = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs
                    if layer(b) > layer(a) and b != "nuwa")
    assert upward == []


def test_there_is_no_import_cycle_inside_the_package(graph):
    # `nuwa/__init__.py` names the flat API lazily; edges into the package root are not imports of
    # its members, so they are left out.
    edges = {a: {b for b in bs if b != "nuwa"} for a, bs in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                cycles.append(" -> ".join(path[path.index(m):] + [m]))
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    assert cycles == []


def test_workflow_scripts_import_only_the_library_and_shared_helpers():
    """A rule script is thin: it calls the library. Besides the library it may import only the
    scripts' shared helpers (log set-up, writers, figure style: modules named `_*`), never another
    rule's script."""
    local = {p.stem for p in (ROOT / "workflow/scripts").glob("*.py")}
    bad = []
    for p in sorted((ROOT / "workflow/scripts").glob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in local \
                    and not node.module.startswith("_"):
                bad.append(f"{p.name} imports {node.module}")
    assert bad == []


def test_importing_nuwa_and_building_the_cli_does_not_import_torch():
    code = ("import sys, nuwa, nuwa.cli; nuwa.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'timm', 'numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_flat_api_resolves_every_name_it_lists():
    import nuwa

    missing = [n for n in nuwa.__all__ if getattr(nuwa, n, None) is None]
    assert missing == []
    assert callable(nuwa.derive) and nuwa.EdgeViT.__module__ == "nuwa.model"
