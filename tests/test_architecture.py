"""The package's shape, read from its source with `ast`: every import (module- and
function-level, so a lazy import counts) and every SQL write to a store table.

- no import cycle between syncd's modules;
- the export reader and the diff know no vendor implementation and no HTTP: they may use
  `syncd.vendors.base` (the Contact dataclass, a connector's facts), nothing else of it;
- the store's tables are written by `syncd/state/` only (a SQL write to one of them in a
  string anywhere else fails the test).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.state import Store

PACKAGE = Path(__file__).parent.parent / "syncd"

WRITE = re.compile(
    r"\b(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM)"
    r"\s+(\w+)"
)


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The syncd modules `name` imports anywhere in its source: `from a import b` counts
    as `a.b` when that is a module, else as `a`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        yield from (t for t in targets if t in known and t != name)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imports(name, path, known)) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_round_a_cycle() -> None:
    assert cycles(graph()) == []


def test_cycles_are_found() -> None:
    """The detector itself: a two-module loop and a self-contained chain."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "module", ["syncd.diff", "syncd.source", "syncd.fastpath", "syncd.project", "syncd.decide"]
)
def test_the_reader_and_the_diff_know_no_vendor_and_no_http(module: str) -> None:
    forbidden = {
        m for m in graph()[module] if m == "syncd.http" or m.startswith("syncd.vendors")
    } - {"syncd.vendors.base"}
    assert forbidden == set()


def test_only_the_store_writes_its_tables(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s.db")
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    store.close()
    writers = set()
    for name, path in modules().items():
        if name.startswith("syncd.state"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                writers |= {(name, t) for t in WRITE.findall(node.value) if t in tables}
    assert writers == set()
