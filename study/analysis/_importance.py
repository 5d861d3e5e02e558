"""Hyperparameter importance from a study's Optuna history: its journal
(``<study>/optuna.journal``) or the database its spec's ``search_storage`` names, opened by
:func:`study.optuna_storage.search_storage` as the driver opens it."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.storages import BaseStorage

from study.analysis._data import PlotDataError
from study.optuna_storage import (
    JOURNAL,
    StorageUnreachable,
    optuna_study_name,
    search_storage,
    storage_kind,
)

__all__ = [
    "JOURNAL",
    "MIN_TRIALS",
    "RELIABLE_TRIALS",
    "NotEnoughTrials",
    "SearchHistory",
    "importance_data",
    "search_histories",
]

#: Completed Optuna trials an importance needs. PED-ANOVA compares the best 10 % of the
#: trials (at least 2) with all of them; with fewer trials than this the top set is most
#: of the study and the importances say little.
MIN_TRIALS = 5
#: Completed trials below which an importance is drawn with a caution and no numbers.
#: PED-ANOVA's top set is the best 10 % but at least 2 trials, so under 20 trials it is
#: those 2, and one lucky trial moves a parameter's share by tens of percent.
RELIABLE_TRIALS = 20


class NotEnoughTrials(PlotDataError):
    """No Optuna study has enough completed trials (or there is no Optuna history, or its
    database cannot be reached: ``unreachable``)."""

    def __init__(self, message: str, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class SearchHistory:
    """One store study's Optuna storage, opened: ``where`` names it in messages (the
    journal's path or the database's URL)."""

    study: str
    where: str
    storage: BaseStorage
    search_storage: str

    def studies(self) -> list[tuple[str, str]]:
        """(Optuna study name, phase) of each search phase of this store study; a
        database may hold other studies' too, which are left out."""
        prefix = optuna_study_name(self.search_storage, self.study, "")
        names = [
            s.study_name
            for s in optuna.get_all_study_summaries(self.storage, include_best_trial=False)
        ]
        return [(n, n[len(prefix) :]) for n in names if n.startswith(prefix)]


def _spec_storage(study_dir: Path) -> str:
    """The stored spec's ``search_storage`` (``journal`` without a spec or the field)."""
    try:
        spec = yaml.safe_load((study_dir / "spec.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return "journal"
    found = spec.get("search_storage") if isinstance(spec, dict) else None
    return found if isinstance(found, str) and found else "journal"


def search_histories(study_dirs: Iterable[Path]) -> tuple[list[SearchHistory], list[str]]:
    """The Optuna storage of each study folder that has one, and one line per database that
    cannot be opened (why). A study whose spec names a database opens it with the
    credentials the environment gives, as the driver does; one without a journal file or a
    database has no history."""
    found: list[SearchHistory] = []
    unreachable: list[str] = []
    for study_dir in study_dirs:
        storage = _spec_storage(study_dir)
        kind = storage_kind(storage)
        if kind == "journal" and not (study_dir / JOURNAL).is_file():
            continue  # no search ran, or its journal was not kept
        where = str(study_dir / JOURNAL) if kind == "journal" else storage
        try:
            opened = search_storage(study_dir.parent, study_dir.name, storage)
        except StorageUnreachable as err:
            unreachable.append(str(err))
            continue
        found.append(SearchHistory(study_dir.name, where, opened, storage))
    return found, unreachable


def importance_data(
    study_dirs: Iterable[Path],
    study_name: str | None = None,
    min_trials: int = MIN_TRIALS,
) -> pd.DataFrame:
    """One row per (store study, Optuna study, parameter): ``importance`` from
    :func:`optuna.importance.get_param_importances` (Optuna's default evaluator, PED-ANOVA,
    which also weighs conditional parameters such as ``dwa/temperature``), normalised to sum
    to 1 per Optuna study, and ``trials`` (its completed trials).

    Each study's history is read from its journal or from the database its stored spec's
    ``search_storage`` names. ``optuna_study`` is the search phase (e.g. ``multi_task``, or
    a stage's ``stage-<name>``); ``study_name`` picks one; by default every phase. Raises
    :class:`NotEnoughTrials` (one line, saying why) when no study has ``min_trials``
    completed trials, there is no Optuna history, or its database cannot be reached. Studies
    left out (too few trials, a database out of reach), when others are drawn, are named
    in ``attrs["skipped"]``."""
    dirs = list(study_dirs)
    histories, unreachable = search_histories(dirs)
    if not histories:
        if unreachable:
            raise NotEnoughTrials(f"importance: {'; '.join(unreachable)}", unreachable=True)
        where = ", ".join(str(d) for d in dirs) or "no folder"
        raise NotEnoughTrials(
            f"importance: no Optuna journal ({JOURNAL}) and no search_storage database in {where}"
        )
    rows: list[dict[str, object]] = []
    short: list[str] = []
    seen: list[str] = []
    for history in histories:
        for name, phase in history.studies():
            if study_name is not None and phase != study_name:
                continue
            seen.append(phase)
            study = optuna.load_study(study_name=name, storage=history.storage)
            done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if len(done) < min_trials or len(study.directions) > 1:
                short.append(f"'{phase}' in {history.where} ({len(done)} completed)")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. a conditional parameter's few trials
                found = optuna.importance.get_param_importances(study)
            rows += [
                {
                    "study": history.study,
                    "optuna_study": phase,
                    "param": param,
                    "importance": float(value),
                    "trials": len(done),
                }
                for param, value in found.items()
            ]
    if not rows:
        if not seen:
            name = f"named {study_name!r} " if study_name else ""
            where = "; ".join([*(h.where for h in histories), *unreachable])
            raise NotEnoughTrials(f"importance: no Optuna study {name}in {where}")
        raise NotEnoughTrials(
            f"importance: not enough trials: at least {min_trials} completed Optuna trials are "
            f"needed; Optuna study {', '.join(short)}"
        )
    data = pd.DataFrame(rows)
    skipped = [*unreachable]
    if short:
        skipped.insert(
            0,
            f"left out for fewer than {min_trials} completed trials: "
            f"Optuna study {', '.join(short)}",
        )
    if skipped:
        data.attrs["skipped"] = f"importance: {'; '.join(skipped)}"
    return data
