"""Each plot kind from a store's results, and writing figures (PNG and SVG, atomically)."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from study.analysis._cd import cd_data
from study.analysis._data import (
    curves_data,
    heatmap_data,
    parallel_data,
    pareto_data,
    ranks_data,
    weights_data,
)
from study.analysis._importance import RELIABLE_TRIALS, NotEnoughTrials, importance_data
from study.analysis._plots import (
    draw_heatmap,
    draw_importance,
    draw_message,
    draw_pareto,
    draw_ranks,
    style,
)
from study.analysis._plots_cd import draw_cd
from study.analysis._plots_runs import draw_curves, draw_parallel, draw_weights
from study.analysis._results import StudyResults
from study.store import write_atomically

__all__ = ["FORMATS", "KINDS", "Plot", "make_plot", "png_bytes", "save_figure"]

#: The plot kinds, in the order ``--kind all`` and the report draw them.
KINDS: tuple[str, ...] = (
    "pareto",
    "heatmap",
    "ranks",
    "cd",
    "curves",
    "weights",
    "parallel",
    "importance",
)
#: The file formats a plot is saved in.
FORMATS: tuple[str, ...] = ("png", "svg")
_DPI = 150


@dataclass(frozen=True)
class Plot:
    """One drawn plot: its ``kind``, the ``figure``, the tidy ``data`` it draws (None when
    it only shows a ``note``, e.g. an importance with not enough trials)."""

    kind: str
    figure: Figure
    data: pd.DataFrame | None
    note: str | None = None


def make_plot(kind: str, results: StudyResults, x: str = "gflops", y: str = "delta_m") -> Plot:
    """The plot ``kind`` of ``results``. Raises :class:`~study.analysis.PlotDataError` when
    the store holds nothing it can draw; an importance with too few trials (or no journal)
    is a figure that says so, with a ``note``."""
    trials, history = results.trials, results.history
    if kind == "pareto":
        data = pareto_data(trials, x=x, y=y)
        return Plot(kind, draw_pareto(data), data)
    if kind == "heatmap":
        data = heatmap_data(trials, value=y if y in ("delta_m", "best_delta_m") else "delta_m")
        return Plot(kind, draw_heatmap(data), data)
    if kind == "ranks":
        data = ranks_data(trials)
        return Plot(kind, draw_ranks(data), data)
    if kind == "cd":
        data = cd_data(trials)
        return Plot(kind, draw_cd(data), data)
    if kind == "curves":
        data = curves_data(trials, history)
        return Plot(kind, draw_curves(data), data)
    if kind == "weights":
        data = weights_data(trials, history)
        return Plot(kind, draw_weights(data), data)
    if kind == "parallel":
        data = parallel_data(trials, color=y if y in ("delta_m", "best_delta_m") else "delta_m")
        return Plot(kind, draw_parallel(data), data)
    if kind == "importance":
        try:
            data = importance_data(results.study_dirs)
        except NotEnoughTrials as err:
            note = str(err)
            title = "Hyperparameter importance: not enough trials"
            if err.unreachable:
                title = "Hyperparameter importance: the search storage cannot be reached"
            elif "no Optuna" in note:
                title = "Hyperparameter importance: no Optuna study"
            return Plot(kind, draw_message(title, note), None, note)
        return Plot(kind, draw_importance(data, RELIABLE_TRIALS), data, data.attrs.get("skipped"))
    raise ValueError(f"unknown plot kind {kind!r}; expected one of {', '.join(KINDS)}")


def save_figure(
    figure: Figure, folder: Path, name: str, formats: Sequence[str] = FORMATS
) -> list[Path]:
    """Write ``<folder>/<name>.<format>`` for each format, each to a hidden temporary name
    first and then renamed, so an existing file is replaced whole or not at all."""
    return [
        write_atomically(folder / f"{name}.{fmt}", functools.partial(_savefig, figure, fmt))
        for fmt in formats
    ]


def _savefig(figure: Figure, fmt: str, path: Path) -> None:
    with style():
        figure.savefig(path, format=fmt, dpi=_DPI)


def png_bytes(figure: Figure) -> bytes:
    """The figure as PNG, as :func:`save_figure` writes it."""
    buffer = io.BytesIO()
    with style():
        figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()
