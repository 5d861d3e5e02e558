"""Hyperparameter importance from a study's Optuna journal (``<study>/optuna.journal``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import optuna
import pandas as pd
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from study.analysis._data import PlotDataError

__all__ = [
    "JOURNAL",
    "MIN_TRIALS",
    "RELIABLE_TRIALS",
    "NotEnoughTrials",
    "importance_data",
    "journal_studies",
]

#: The journal's file name in a study folder (``study.search.journal_storage``).
JOURNAL = "optuna.journal"
#: Completed Optuna trials an importance needs. PED-ANOVA compares the best 10 % of the
#: trials (at least 2) with all of them; with fewer trials than this the top set is most
#: of the study and the importances say little.
MIN_TRIALS = 5
#: Completed trials below which an importance is drawn with a caution and no numbers.
#: PED-ANOVA's top set is the best 10 % but at least 2 trials, so under 20 trials it is
#: those 2, and one lucky trial moves a parameter's share by tens of percent.
RELIABLE_TRIALS = 20


class NotEnoughTrials(PlotDataError):
    """No Optuna study has enough completed trials (or there is no journal)."""


def _storage(path: Path) -> JournalStorage:
    # Read-only use: JournalFileBackend opens the file for appends but writes nothing
    # unless a study or trial is created.
    return JournalStorage(JournalFileBackend(os.fspath(path)))


def journal_studies(study_dirs: Iterable[Path]) -> list[tuple[str, Path]]:
    """(store study name, journal path) of each study folder that has a journal."""
    return [(d.name, d / JOURNAL) for d in study_dirs if (d / JOURNAL).is_file()]


def importance_data(
    study_dirs: Iterable[Path],
    study_name: str | None = None,
    min_trials: int = MIN_TRIALS,
) -> pd.DataFrame:
    """One row per (store study, Optuna study, parameter): ``importance`` from
    :func:`optuna.importance.get_param_importances` (Optuna's default evaluator, PED-ANOVA,
    which also weighs conditional parameters such as ``dwa/temperature``), normalised to sum
    to 1 per Optuna study, and ``trials`` (its completed trials).

    ``study_name`` picks one Optuna study (e.g. ``multi_task``, or a stage's
    ``stage-<name>``); by default every study in each journal. Raises
    :class:`NotEnoughTrials` (one line, saying why) when no study has ``min_trials``
    completed trials, or there is no journal. Studies left out for too few trials, when
    others have enough, are named in ``attrs["skipped"]``."""
    dirs = list(study_dirs)
    journals = journal_studies(dirs)
    if not journals:
        where = ", ".join(str(d) for d in dirs) or "no folder"
        raise NotEnoughTrials(f"importance: no Optuna journal ({JOURNAL}) in {where}")
    rows: list[dict[str, object]] = []
    short: list[str] = []
    seen: list[str] = []
    for store_study, path in journals:
        storage = _storage(path)
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            if study_name is not None and summary.study_name != study_name:
                continue
            seen.append(summary.study_name)
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) < min_trials or len(study.directions) > 1:
                short.append(f"'{summary.study_name}' in {path} ({len(done)} completed)")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. a conditional parameter's few trials
                found = optuna.importance.get_param_importances(study)
            rows += [
                {
                    "study": store_study,
                    "optuna_study": summary.study_name,
                    "param": param,
                    "importance": float(value),
                    "trials": len(done),
                }
                for param, value in found.items()
            ]
    if not rows:
        if not seen:
            name = f"named {study_name!r} " if study_name else ""
            raise NotEnoughTrials(f"importance: no Optuna study {name}in {journals[0][1]}")
        raise NotEnoughTrials(
            f"importance: not enough trials: at least {min_trials} completed Optuna trials are "
            f"needed; Optuna study {', '.join(short)}"
        )
    data = pd.DataFrame(rows)
    if short:
        data.attrs["skipped"] = (
            f"importance: left out for fewer than {min_trials} completed trials: "
            f"Optuna study {', '.join(short)}"
        )
    return data
