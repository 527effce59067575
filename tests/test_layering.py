"""The package's layering, read from the source: who may import whom (DESIGN.md, "Data flows one way").

Every module under zoo/ is parsed with ``ast`` (nothing is imported) and every import
statement counts, module level or inside a function, so a lazy import cannot hide an edge.
Rules:

* every imported zoo module exists (a moved module's old importers fail here, not at run time);
* no import cycle between modules;
* ``zoo.core`` imports nothing from zoo outside ``zoo.core`` (the package ``zoo`` included);
* ``zoo.body`` never imports ``zoo.render`` or ``zoo.data`` (render poses no body: it renders meshes);
* ``zoo.render`` never imports ``zoo.data`` or ``zoo.systems``;
* components (``zoo.models``, ``zoo.render``, ``zoo.body``, ``zoo.data``, ``zoo.metrics``) never import
  ``zoo.systems``.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "zoo"
COMPONENTS = ("zoo.models", "zoo.render", "zoo.body", "zoo.data", "zoo.metrics")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _targets(node: ast.AST, module: str, is_package: bool) -> tuple[list[str], str | None]:
    """(modules named by ``import a.b``, the module of ``from a.b import c``) of an import statement."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names], None
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            return [], ".".join(base + ([node.module] if node.module else []))
        return [], node.module or ""
    return [], None


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The zoo modules an import statement names (a name imported from a package counts as its submodule)."""
    names, target = _targets(node, module, is_package)
    if target is not None:
        names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
    out = []
    for name in names:
        # `import zoo.a.b` or `from zoo.a import b` where b is no module: the longest known prefix
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            out.append(name)
    return out


def _graph() -> tuple[dict[str, dict[str, int]], list[str]]:
    """(module -> {imported zoo module: line of the first import}, imports of zoo modules that do not exist)."""
    mods = _modules()
    known = set(mods)
    graph: dict[str, dict[str, int]] = {}
    missing: list[str] = []
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        for node in ast.walk(tree):
            is_package = path.name == "__init__.py"
            for dep in _imported(node, name, is_package, known):
                if dep != name:
                    edges.setdefault(dep, node.lineno)
            names, target = _targets(node, name, is_package)
            for raw in names + ([target] if target else []):
                if (raw == "zoo" or raw.startswith("zoo.")) and raw not in known:
                    missing.append(f"{name} (line {node.lineno}) -> {raw}")
        graph[name] = edges
    return graph, missing


GRAPH, MISSING = _graph()


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _edges(src: str, dst_outside: str | None = None, dst_in: tuple[str, ...] = ()) -> list[str]:
    """'a (line n) -> b' for every edge from modules in package ``src`` that breaks the rule."""
    bad = []
    for mod, deps in sorted(GRAPH.items()):
        if not _within(mod, src):
            continue
        for dep, line in sorted(deps.items()):
            outside = dst_outside is not None and not _within(dep, dst_outside)
            if outside or any(_within(dep, d) for d in dst_in):
                bad.append(f"{mod} (line {line}) -> {dep}")
    return bad


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of ``graph`` with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_graph_sees_the_package_and_lazy_imports():
    # The reader itself: every package is there, and an import inside a function is an edge.
    assert {"zoo", "zoo.core", "zoo.body", "zoo.render", "zoo.data", "zoo.metrics"} <= set(GRAPH)
    assert "zoo.render.raster" in GRAPH["zoo.render.multiview"]
    assert "zoo.data.synthetic.damon" in GRAPH["zoo.data.damon"]  # imported inside a method


def test_every_zoo_import_names_a_module_that_exists():
    # A module that moved leaves its old importers behind; lazy imports would only fail when run.
    assert not MISSING, "imports of zoo modules that do not exist:\n  " + "\n  ".join(MISSING)


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    detail = ["  cycle: " + " <-> ".join(c) + "\n" + "\n".join(
        f"    {a} (line {GRAPH[a][b]}) -> {b}" for a in c for b in c if b in GRAPH[a]) for c in cycles]
    assert not cycles, "import cycles between zoo modules:\n" + "\n".join(detail)


def test_core_imports_nothing_outside_core():
    bad = _edges("zoo.core", dst_outside="zoo.core")
    assert not bad, "zoo.core must import nothing from the rest of zoo:\n  " + "\n  ".join(bad)


def test_body_imports_neither_render_nor_data():
    bad = _edges("zoo.body", dst_in=("zoo.render", "zoo.data"))
    assert not bad, "zoo.body must not import zoo.render or zoo.data:\n  " + "\n  ".join(bad)


def test_render_imports_neither_data_nor_systems():
    bad = _edges("zoo.render", dst_in=("zoo.data", "zoo.systems"))
    assert not bad, "zoo.render must not import zoo.data or zoo.systems:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("component", COMPONENTS)
def test_components_never_import_systems(component):
    bad = _edges(component, dst_in=("zoo.systems",))
    assert not bad, f"{component} must not import zoo.systems:\n  " + "\n  ".join(bad)


def _stmt(src: str) -> ast.stmt:
    return ast.parse(src).body[0]


def test_import_resolution_by_hand():
    # The resolver on hand-made statements: relative imports, names from packages, unknown modules.
    known = {"zoo", "zoo.render", "zoo.render.cameras", "zoo.data", "zoo.data.synthetic", "zoo.data.synthetic.files"}
    parse = _stmt
    assert _imported(parse("from . import files"), "zoo.data.synthetic.damon", False, known) == ["zoo.data.synthetic.files"]
    assert _imported(parse("from .. import data"), "zoo.data.synthetic", True, known) == ["zoo.data"]
    assert _imported(parse("from zoo.render.cameras import VIEW_SETS"), "zoo.x", False, known) == ["zoo.render.cameras"]
    assert _imported(parse("from zoo.render import cameras, nothing"), "zoo.x", False, known) == [
        "zoo.render.cameras", "zoo.render"]
    assert _imported(parse("import zoo.render.gone"), "zoo.x", False, known) == ["zoo.render"]
    assert _imported(parse("import numpy"), "zoo.x", False, known) == []


def test_cycle_finder_by_hand():
    # a <-> b is a cycle (as zoo.render.lift <-> zoo.render.multiview was); c -> a and d -> d are not.
    graph = {"a": {"b": 1}, "b": {"a": 2, "c": 3}, "c": {}, "d": {"d": 1}, "e": {"a": 1}}
    assert _cycles(graph) == [["a", "b"]]
    assert _cycles({"x": {"y": 1}, "y": {"z": 1}, "z": {"x": 1}}) == [["x", "y", "z"]]
