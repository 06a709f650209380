"""The import graph of src/cnnlab: no cycle, and every import points down the layers.

Built statically with `ast` from every module's source, imports inside functions included (a
late import hides a cycle from Python, not from this test). `from cnnlab.x import y` is an edge
to the module `cnnlab.x.y` when that is a module, else to `cnnlab.x` (the package's __init__);
the parent packages Python initialises on the way are not edges, so a package __init__ that
re-exports its own modules is no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"

# Lowest first; a module may import from its own layer and the layers before it. A module is
# placed by the longest prefix listed here: a new package or top-level module gets a row.
LAYERS = [
    ("leaf", ["cnnlab", "cnnlab.errors", "cnnlab.atomic", "cnnlab.runinfo"]),
    ("ops", ["cnnlab.ops"]),
    ("nn", ["cnnlab.nn"]),
    ("models", ["cnnlab.models"]),
    ("analysis", ["cnnlab.analysis"]),
    ("data", ["cnnlab.data"]),
    ("train", ["cnnlab.train"]),
    ("interop", ["cnnlab.interop"]),
    ("report", ["cnnlab.report"]),
    ("explore", ["cnnlab.explore"]),
    ("cli", ["cnnlab.cli", "cnnlab.__main__"]),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(module: str, is_package: bool, node, modules) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "cnnlab"]
    if node.level:  # relative: from . import x, from .x import y
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    if name.split(".")[0] != "cnnlab":
        return []
    return [f"{name}.{a.name}" if f"{name}.{a.name}" in modules else name for a in node.names]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_targets(module, path.name == "__init__.py", node, modules))
        unknown = deps - set(modules)
        assert not unknown, f"{module} imports {unknown}, which are not modules of src/cnnlab"
        graph[module] = deps - {module}
    return graph


def layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    assert best is not None, f"{module} has no layer: add it to LAYERS in {__file__}"
    return best[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_sees_what_it_must():
    graph = import_graph()
    # an import inside a function, a relative import, and `from package import module`
    assert "cnnlab.models" in graph["cnnlab.train.checkpoint"]          # inside load_model
    assert "cnnlab.ops.fast_conv" in graph["cnnlab.ops"]                # from . import fast_conv
    assert "cnnlab.nn" in graph["cnnlab.models.lenet"]                  # from cnnlab import nn
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_between_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages():
    packages = {}
    for module, deps in import_graph().items():
        own = ".".join(module.split(".")[:2])
        packages.setdefault(own, set()).update(".".join(d.split(".")[:2]) for d in deps)
    packages = {p: deps - {p} for p, deps in packages.items()}
    cycle = find_cycle(packages)
    assert cycle is None, "packages import each other: " + " -> ".join(cycle)


def test_every_import_points_down_the_layers():
    names = [name for name, _ in LAYERS]
    upward = [f"{module} ({names[layer_of(module)]}) imports {dep} ({names[layer_of(dep)]})"
              for module, deps in sorted(import_graph().items()) for dep in sorted(deps)
              if layer_of(dep) > layer_of(module)]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
