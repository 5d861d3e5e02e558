"""What the analysis reads: a store's trials, the history rows the plots need, study folders."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.store import HISTORY_COLUMNS, load, result_files

__all__ = ["HISTORY_WHERE", "StudyResults", "load_results"]

#: The history rows the plots draw: validation metrics, the balancers' weights and
#: achievements.
HISTORY_WHERE = "split == 'val' or metric in ('weight', 'achievement')"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class StudyResults:
    """Trials and history of one or more results roots or study folders."""

    trials: pd.DataFrame
    history: pd.DataFrame
    study_dirs: tuple[Path, ...]


def load_results(paths: PathLike | Sequence[PathLike]) -> StudyResults:
    """Read the trials (every column) and the history rows of :data:`HISTORY_WHERE`.

    A path without trials raises ``FileNotFoundError`` (one line); a study without
    history files reads as no history rows."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files = result_files(items, "trials")
    study_dirs = tuple(dict.fromkeys(f.parent.parent for f in files))
    trials = load(items, "trials")
    with_history = []
    for item in items:
        try:
            result_files(item, "history")
        except FileNotFoundError:
            continue
        with_history.append(item)
    if with_history:
        history = load(with_history, "history", where=HISTORY_WHERE)
    else:
        history = pd.DataFrame({c: pd.Series(dtype=object) for c in [*HISTORY_COLUMNS, "study"]})
    return StudyResults(trials=trials, history=history, study_dirs=study_dirs)
