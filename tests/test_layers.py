"""The package's import graph: no cycles between modules, refinement uses no curation or training
internals (both would make a later stage depend on an earlier one's implementation), and the tiny-model
kit sits above the model layer, below the stages."""
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


# The model layer and the tiny-model kit above it: the kit loads and saves through `carevl.models` and
# builds its data from `carevl.data`; `carevl.models` (what every real model needs) never reaches up.
KIT_MAY_IMPORT = ("carevl.config", "carevl.data", "carevl.models", "carevl.prompts", "carevl.judge_format",
                  "carevl.kit")


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_models_never_import_the_kit():
    edges, _ = _graph()
    for module, deps in edges.items():
        if _under(module, "carevl.models"):
            bad = [d for d in deps if _under(d, "carevl.kit")]
            assert not bad, (module, bad)


def test_the_kit_imports_only_the_layers_below_it():
    edges, _ = _graph()
    kit = [m for m in edges if _under(m, "carevl.kit")]
    assert len(kit) >= 6, kit  # the kit's modules are where this test looks for them
    for module in kit:
        bad = [d for d in edges[module] if not any(_under(d, p) for p in KIT_MAY_IMPORT)]
        assert not bad, (module, bad)
