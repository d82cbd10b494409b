"""The package's import graph, read from the source with ``ast`` (nothing is imported): no
cycles between modules, and the data plane never reaches the control plane or the runtimes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "gateway"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, anywhere in it (a lazy import inside a
    function is an edge too: it runs), ``TYPE_CHECKING`` blocks excepted (they never run)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from pkg import mod" imports the module pkg.mod; "from mod import name" imports mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        # a module naming its own package adds no edge: Python imports a package before any of
        # its modules anyway (gateway.worker.server reading BadInput from gateway.worker)
        out |= {t for t in targets if t in known and not (name + ".").startswith(t + ".")}
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(graph()) == []


def test_the_data_plane_imports_neither_control_nor_runtimes() -> None:
    edges = graph()
    forbidden = ("gateway.control", "gateway.runtimes", "gateway.admin", "gateway.app")
    bad = {m: sorted(t for t in targets if t.startswith(forbidden))
           for m, targets in edges.items() if m.startswith("gateway.dataplane")}
    assert {m: t for m, t in bad.items() if t} == {}


def third_party(path: Path) -> set[str]:
    """Top-level names of the absolute imports in ``path`` outside ``TYPE_CHECKING`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for node in ast.walk(tree)
               if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for stmt in node.body for n in ast.walk(stmt)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name.partition(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module.partition(".")[0])
    return out


def test_the_data_plane_answers_without_aiohttp_or_docker() -> None:
    """The hot path writes answers with its own HTTP/1.1 server (no aiohttp response objects
    per request) and never reaches Docker."""
    bad = {name: sorted(third_party(path) & {"aiohttp", "docker"})
           for name, path in modules().items() if name.startswith("gateway.dataplane")}
    assert {m: t for m, t in bad.items() if t} == {}


def test_the_admin_api_talks_to_a_facade_not_the_gateway() -> None:
    edges = graph()
    assert not [m for m, targets in edges.items()
                if m.startswith("gateway.admin") and "gateway.app" in targets]
