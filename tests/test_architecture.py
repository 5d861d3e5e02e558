"""The rules that keep the layers apart, read from the source (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "models", "search_spaces", "cluster", "mtlstudy")
#: What each layer may not import (by top-level name). ``mtlstudy`` is the one import
#: name over all of them: nothing below imports it, and it imports only public names.
FORBIDDEN = {
    "models": ("ray", "deepspeed", "optuna", "study", "search_spaces", "cluster", "mtlstudy"),
    "search_spaces": ("ray", "deepspeed", "study", "cluster", "mtlstudy"),
    "cluster": ("study", "models", "search_spaces", "deepspeed", "optuna", "mtlstudy"),
    "study": ("mtlstudy",),
    "mtlstudy": ("torch", "numpy", "pandas", "ray", "deepspeed", "optuna"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    _module_name(path): path
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def _package(module: str) -> str:
    """The package a module's relative names live in (a package's own ``__init__``: itself)."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, runtime: bool = True) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth; with ``runtime``, none under TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            if not runtime:
                yield from _imports(node, runtime)
            for child in node.orelse:
                yield from _imports(child, runtime)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node, runtime)


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package(module).split(".")
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _exported_from(package: str) -> dict[str, str]:
    """Which private module each name a package's ``__init__`` re-exports comes from,
    whether imported eagerly or declared for type checkers beside a lazy export."""
    tree = ast.parse(MODULES[package].read_text())
    found = {}
    for node in _imports(tree, runtime=False):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(package, node)
            if source.startswith(package + ".") and source in MODULES:
                found |= {alias.asname or alias.name: source for alias in node.names}
    return found


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str]]:
    """(module imported, name taken from it) for each project module an import reaches."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in MODULES:
                yield alias.name, ""
        return
    source = _absolute(module, node)
    if source not in MODULES:
        return
    exported = _exported_from(source) if MODULES[source].name == "__init__.py" else {}
    for alias in node.names:
        submodule = f"{source}.{alias.name}"
        if submodule in MODULES:
            yield submodule, ""
        else:
            yield exported.get(alias.name, source), alias.name


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, set())
        for node in _imports(ast.parse(path.read_text())):
            edges |= {target for target, _ in _targets(module, node) if target != module}
    return graph


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_import_nothing_above_them(layer: str) -> None:
    seen = []
    for module, path in MODULES.items():
        if module.split(".")[0] != layer:
            continue
        for node in _imports(ast.parse(path.read_text()), runtime=False):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module or ""]
            seen += [f"{module}: {n}" for n in names if n.split(".")[0] in FORBIDDEN[layer]]
    assert not seen, seen


def _owner(source: str, names: list[str]) -> str | None:
    """The package whose private parts an import reaches into (None: only public ones).
    A private module or name belongs to its package and that package's subpackages."""
    parts = source.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return ".".join(parts[:i])
    if any(name.startswith("_") for name in names):
        return source if MODULES[source].name == "__init__.py" else source.rpartition(".")[0]
    return None


def test_no_module_imports_a_private_name_of_another_package() -> None:
    seen = []
    for module, path in MODULES.items():
        package = _package(module)
        for node in _imports(ast.parse(path.read_text()), runtime=False):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = _absolute(module, node)
            if source.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            owner = _owner(source, names)
            if owner is not None and package != owner and not package.startswith(owner + "."):
                seen.append(f"{module}: from {source} import {', '.join(names)}")
    assert not seen, seen


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle_outside_type_checking() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_study_has_few_top_level_modules() -> None:
    top = [p.name for p in (ROOT / "study").glob("*.py")]
    assert len(top) <= 8, top


def test_mtlstudy_names_only_public_modules_and_names() -> None:
    """The lazy table of ``mtlstudy`` points at public names of the layers below it."""
    tree = ast.parse(MODULES["mtlstudy"].read_text())
    table = next(
        node.value
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "_WHERE"
    )
    targets = [ast.literal_eval(value) for value in table.values]
    assert targets, "no lazy names found"
    for module, name in targets:
        assert module.split(".")[0] in PACKAGES[:4] and module in MODULES, module
        assert not any(part.startswith("_") for part in module.split(".")), module
        assert name is None or not name.startswith("_"), name
