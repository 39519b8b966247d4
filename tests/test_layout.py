"""The package reads like the flow: no import circles, no stage imports a later one.

Stages in flow order (DESIGN.md, "Package layout and settings"): a module of
one stage may import shared modules, its own stage and earlier stages, never a
later stage; shared modules import no stage at all. The graph is read from the
source with :mod:`ast`, function-local imports included, so a circle hidden in
a function body is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clumpcat

PACKAGE = Path(clumpcat.__file__).parent

#: Stage subpackages in the order data flows through them.
STAGES = ("survey", "render", "detection", "postprocess", "photometry", "catalogue", "evaluation")
#: Top-level modules that tie stages together and so may import any of them.
ENTRY_POINTS = {"clumpcat.cli", "clumpcat.__main__", "clumpcat"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "clumpcat" or name.startswith("clumpcat.")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for module, path in paths.items():
        targets = set()
        for name in _imports(path, module):
            # ``from clumpcat.x import y`` names a module when y is one.
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _stage(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return STAGES.index(parts[1])
    return None


def _is_package_init(module: str, graph) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()


def test_no_import_circles():
    graph = import_graph()
    # A package __init__ that re-exports its own modules is not a circle.
    edges = {
        m: {t for t in ts if not (_is_package_init(t, graph) and m.startswith(t + "."))}
        for m, ts in graph.items()
    }
    state: dict[str, int] = {}
    circles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_no_module_imports_a_later_stage():
    wrong = []
    for module, targets in import_graph().items():
        if module in ENTRY_POINTS:
            continue
        own = _stage(module)
        for target in targets:
            other = _stage(target)
            if other is None:
                continue
            if own is None:
                wrong.append(f"shared module {module} imports stage module {target}")
            elif other > own:
                wrong.append(f"{module} ({STAGES[own]}) imports {target} ({STAGES[other]}, a later stage)")
    assert not wrong, "\n".join(sorted(wrong))


def test_every_stage_is_a_subpackage():
    for stage in STAGES:
        assert (PACKAGE / stage / "__init__.py").exists(), stage


def test_graph_sees_function_local_imports(tmp_path):
    # The checker must not be blind to imports hidden in function bodies.
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from clumpcat.evaluation import evaluate\n")
    assert "clumpcat.evaluation.evaluate" in _imports(source, "clumpcat.survey.mod")
