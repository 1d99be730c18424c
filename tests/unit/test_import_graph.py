"""The house's walls: no import cycle inside llmpool, and the rooms keep to themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import llmpool

ROOT = Path(llmpool.__file__).parent


def _graph() -> dict[str, set[str]]:
    """Module -> the llmpool modules it imports (function-level imports included)."""
    modules: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("llmpool", *path.relative_to(ROOT).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    if target in modules:
                        graph[name].add(target)
                    elif node.module in modules:
                        graph[name].add(node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in modules)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    """No two llmpool modules import each other, directly or around a circle."""
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_circle() -> None:
    """The check itself reports a circle when there is one."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_pool_memory_and_plugins_never_import_each_other() -> None:
    """DESIGN.md: pool/, memory/ and plugins/ are wired by the client, never by each other."""
    rooms = ("llmpool.pool", "llmpool.memory", "llmpool.plugins")
    for name, targets in _graph().items():
        room = next((r for r in rooms if name == r or name.startswith(r + ".")), None)
        if room is None:
            continue
        for target in targets:
            other = next((r for r in rooms if target == r or target.startswith(r + ".")), None)
            assert other in (None, room), f"{name} imports {target}"


def _importers(package: str) -> set[str]:
    """The llmpool modules that import *package* (or a module of it)."""
    found = set()
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [f"{node.module}.{a.name}" for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module
                else []
            )
            if any(n == package or n.startswith(package + ".") for n in names):
                found.add(path.relative_to(ROOT).as_posix())
    return found


def test_third_party_boundaries() -> None:
    """Only pool/transport.py touches urllib3's exceptions; only memory/ imports psutil."""
    assert _importers("urllib3.exceptions") == {"pool/transport.py"}
    psutil_users = _importers("psutil")
    assert psutil_users and all(p.startswith("memory/") for p in psutil_users)


def test_only_state_redis_imports_redis() -> None:
    """redis (the optional extra) is imported by state/redis.py alone, which
    nothing imports at module level: only a configuration that chooses it loads it."""
    assert _importers("redis") == {"state/redis.py"}
    graph = _graph()
    assert [name for name, targets in graph.items() if "llmpool.state.redis" in targets] == [
        "llmpool.state"
    ]


def test_state_keeps_to_values() -> None:
    """DESIGN.md: state/ imports values only, never pool/, memory/ or plugins/ (plugins use it)."""
    rooms = ("llmpool.pool", "llmpool.memory", "llmpool.plugins", "llmpool.client")
    for name, targets in _graph().items():
        if name == "llmpool.state" or name.startswith("llmpool.state."):
            assert not [t for t in targets if t.startswith(rooms)], name
