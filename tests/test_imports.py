"""The package's import graph has no cycle, counting imports inside functions: each module can be read (and
changed) after the ones it imports, and the folder listing stays a table of contents."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlhf_nb"


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module under rlhf_nb/ (a package's __init__ as the package's own name)."""
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (top level or inside a function)."""
    mods = modules()

    def owner(name: str) -> str | None:  # the module a dotted name lives in: rlhf_nb.policy.sample -> rlhf_nb.policy
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else (node.module or "")
                targets = [f"{base}.{a.name}" for a in node.names]  # `from . import policy` names a module
            else:
                continue
            for t in targets:
                t = owner(t)
                if t and t != mod and t.startswith("rlhf_nb"):
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "rlhf_nb.decoding" in graph["rlhf_nb.policy"]  # the walk sees the package
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def private_imports() -> list[str]:
    """`from <package module> import _name` anywhere in the package: one module leaning on another's internals."""
    found = []
    for mod, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("rlhf_nb")):
                found += [f"{mod}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_s_private_name():
    assert private_imports() == []


def test_the_private_import_finder_sees_one(tmp_path, monkeypatch):
    fake = tmp_path / "rlhf_nb"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("def f():\n    from .b import _helper\n")
    (fake / "b.py").write_text("def _helper():\n    pass\n")
    monkeypatch.setitem(globals(), "PACKAGE", fake)
    assert private_imports() == ["rlhf_nb.a:2 imports _helper"]
