"""Interactive plots for the report, drawn by Optuna's own plotly visualisations from a
study's Optuna history (its journal or database); empty where plotly is not installed (the
extra ``viz``). The figures load plotly.js from ``plotly.min.js`` beside the report
(:func:`write_plotlyjs`), not inlined: the library is about 4.6 MB, and written once it
serves every report in the folder."""

from __future__ import annotations

import html
import importlib.util
import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna

from study.analysis._importance import search_histories
from study.store import write_atomically

__all__ = ["PLOTLY_JS", "has_plotly", "parallel_coordinate_html", "write_plotlyjs"]

PLOTLY_JS = "plotly.min.js"
"""The file name, beside the report, its interactive figures load plotly.js from."""


def has_plotly() -> bool:
    """Whether plotly, which Optuna's interactive plots need, is installed."""
    return importlib.util.find_spec("plotly") is not None


def parallel_coordinate_html(study_dirs: Iterable[Path]) -> str:
    """Per Optuna study in each search history with a completed trial, Optuna's
    ``plot_parallel_coordinate`` as an HTML fragment that loads plotly.js once from
    :data:`PLOTLY_JS`, a relative address (so the report requests nothing outside its
    folder); its first objective where there are several. Empty without plotly or a history."""
    if not has_plotly():
        return ""
    parts: list[str] = []
    histories, _ = search_histories(study_dirs)  # the importance says which are unreachable
    for history in histories:
        for name, phase in history.studies():
            study = optuna.load_study(study_name=name, storage=history.storage)
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if not done:
                continue
            several = len(study.directions) > 1
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning and the like
                figure = optuna.visualization.plot_parallel_coordinate(
                    study,
                    target=(lambda t: t.values[0]) if several else None,
                    target_name="objective 1" if several else "Objective Value",
                )
            figure.update_layout(
                title=f"{history.study} · Optuna study '{phase}' · {len(done)} completed trials",
                width=1100,
            )
            parts.append(
                f'<div class="interactive" data-study="{html.escape(phase)}">'
                + figure.to_html(
                    full_html=False,
                    # The library once, then only the figures.
                    include_plotlyjs=False if parts else PLOTLY_JS,
                    include_mathjax=False,
                    config={"displaylogo": False},
                )
                + "</div>"
            )
    return "\n".join(parts)


def write_plotlyjs(folder: Path) -> Path:
    """Write the installed plotly's ``plotly.min.js`` into ``folder`` (atomically; left
    alone where the same bytes are there already) and return its path."""
    from plotly.offline import get_plotlyjs

    code = get_plotlyjs()
    path = folder / PLOTLY_JS
    try:
        if path.read_text(encoding="utf-8") == code:
            return path
    except (OSError, UnicodeDecodeError):
        pass  # missing or unreadable: write it
    return write_atomically(path, lambda tmp: tmp.write_text(code, encoding="utf-8"))
