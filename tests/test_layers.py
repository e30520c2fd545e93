"""The package's import graph: no cycles between modules, and refinement uses no curation or training
internals (both would make a later stage depend on an earlier one's implementation)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "carevl"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> tuple[set[str], list[str]]:
    """(carevl modules imported at module level, carevl imports made inside functions)."""
    tree = ast.parse(path.read_text())
    top, nested = set(), []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("carevl"):
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("carevl")]
        if not names:
            continue
        if node.col_offset == 0:
            top.update(n for n in names if n in known)
        else:
            nested.extend(names)
    return top, nested


def _graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges, nested = {}, {}
    for name, path in files.items():
        edges[name], nested[name] = _imports(path, set(files))
    return edges, nested


def test_no_import_cycles():
    edges, _ = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(edges[node]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing its own submodules is not a cycle between modules.
    cycles = [c for c in cycles if not all(m.startswith(c[0] + ".") or m == c[0] for m in c)]
    assert not cycles, cycles


def test_no_carevl_import_inside_a_function():
    _, nested = _graph()
    hidden = {m: n for m, n in nested.items() if n}
    assert not hidden, hidden


def test_refinement_uses_no_curation_or_training_internals():
    edges, _ = _graph()
    for module, deps in edges.items():
        if module.startswith("carevl.refine"):
            bad = [d for d in deps if d.startswith(("carevl.curation", "carevl.training"))]
            assert not bad, (module, bad)
