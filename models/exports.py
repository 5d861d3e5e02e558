"""Lazy re-exports for a package's ``__init__``: the names it imports for type checkers
(under ``if TYPE_CHECKING:``) are imported on first use, so importing one part of a
package (the balancing catalogue, a Ray worker importing the trial) does not import the
rest (torch, the tuner, the plotting stack). The one list of a package's public names is
that block. ``models`` holds it because every other package may import ``models``."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path

__all__ = ["lazy_exports"]


def _declared(init_file: str) -> dict[str, str]:
    """Each name imported under ``if TYPE_CHECKING:`` in ``init_file``, with its module."""
    tree = ast.parse(Path(init_file).read_text())
    where: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    for alias in statement.names:
                        where[alias.asname or alias.name] = statement.module
    return where


def lazy_exports(
    package: str, init_file: str
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` from the names its
    ``__init__`` (``init_file``) imports under ``if TYPE_CHECKING:``."""
    where = _declared(init_file)

    def __getattr__(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(where)

    return sorted(where), __getattr__, __dir__
