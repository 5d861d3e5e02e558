"""mtlstudy's public API under one import name that cannot clash with a research
repository's own ``models`` or ``study`` package::

    import mtlstudy

    trials = mtlstudy.load_trials("results/demo")          # a pandas DataFrame
    print(mtlstudy.table("results/demo", "markdown"))      # the paper table
    mtlstudy.plot("results/demo", "cd").figure              # a matplotlib Figure
    model = mtlstudy.create_model("hard_sharing", ["semseg", "depth"])
    mtlstudy.balancing.list_methods()

Each name is imported on first use: ``import mtlstudy`` imports neither torch nor
pandas, and reading results imports no torch. The names live in ``study``, ``models``
and ``search_spaces``, which stay importable as before.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from study.analysis import Plot, StudyResults

__all__ = [
    "balancing",
    "create_model",
    "get_task",
    "leaderboard",
    "load",
    "load_history",
    "load_results",
    "load_spec",
    "load_trials",
    "make_plot",
    "plot",
    "table",
    "write_report",
]

#: Each lazily imported name: (module, attribute), or (module, None) for the module.
_WHERE: dict[str, tuple[str, str | None]] = {
    "balancing": ("models.balancing", None),
    "create_model": ("models", "create_model"),
    "get_task": ("models", "get_task"),
    "leaderboard": ("study.analysis", "leaderboard"),
    "load": ("study.store", "load"),
    "load_history": ("study.store", "load_history"),
    "load_results": ("study.analysis", "load_results"),
    "load_spec": ("study.spec", "load_spec"),
    "load_trials": ("study.store", "load_trials"),
    "make_plot": ("study.analysis", "make_plot"),
    "table": ("study.analysis", "table"),
    "write_report": ("study.analysis", "write_report"),
}

Paths = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def plot(results: StudyResults | Paths, kind: str, x: str = "gflops", y: str = "delta_m") -> Plot:
    """The plot ``kind`` (``mtlstudy plot --kind``'s choices) of loaded results or of
    results roots / study folders; ``.figure`` is the figure, ``.data`` what it draws."""
    from study.analysis import StudyResults, load_results, make_plot

    if not isinstance(results, StudyResults):
        results = load_results(results)
    return make_plot(kind, results, x=x, y=y)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mtlstudy' has no attribute {name!r}")
    module, attribute = _WHERE[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)


def __dir__() -> list[str]:
    return sorted(__all__)
