"""The study's searcher: Optuna through Ray Tune, with repeats over seeds, several
objectives and constraints.

Each configuration Optuna proposes runs ``repeats`` times as Tune trials of their own
(``repeat`` 0, 1, … in the config; ``config_id`` names the group). Optuna is told once per
configuration, when its last repeat ends: the mean of each objective over the repeats that
reported it, and each constraint's violation at the mean (``trial.set_constraint``), with
each epoch's mean over its repeats as the intermediate values. A configuration the
scheduler stopped before its last epoch is told as PRUNED, with the values it reported per
epoch, so the sampler does not take an early value for a final one.
Each Optuna trial carries the store's ``config_id`` and ``trial_ids`` as user attributes.

Optuna's history is in the study's journal file, an SQL database or Redis (the spec's
``search_storage``): :func:`study.optuna_storage.search_storage` opens it, when the search
starts and when a resumed driver rebinds the searcher.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from study import store
from study.optuna_storage import RedisBackend as _RedisBackend  # noqa: F401 (older pickles)
from study.optuna_storage import (
    StorageUnreachable,
    journal_storage,
    optuna_study_name,
    search_storage,
)
from study.spec import ConstraintSpec, constraint_values

__all__ = [
    "StorageUnreachable",
    "StudySearch",
    "journal_storage",
    "mean_result",
    "optuna_study_name",
    "search_storage",
    "tpe_sampler",
]


def tpe_sampler(
    seed: int, startup_trials: int, multivariate: bool = False, constant_liar: bool = False
) -> optuna.samplers.TPESampler:
    """Optuna's TPE; its first ``startup_trials`` draws are random search's, seed for seed."""
    with warnings.catch_warnings():
        # multivariate, group and constant_liar are marked experimental.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=startup_trials,
            multivariate=multivariate,
            # The spaces are conditional (each method has its own knobs): a joint density
            # needs the groups of parameters that are sampled together.
            group=multivariate,
            constant_liar=constant_liar,
        )


@dataclass
class _Group:
    """One configuration and the repeats of it issued and finished so far."""

    config: dict[str, Any]
    issued: int = 0
    results: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    #: Whether the scheduler stopped a repeat before its last epoch.
    stopped: bool = False
    #: Each step's objective value, by repeat (Tune trial id): Optuna gets their means.
    steps: dict[int, dict[str, float]] = field(default_factory=dict)


def mean_result(
    results: Sequence[Mapping[str, Any] | None], metrics: Sequence[str]
) -> dict[str, float] | None:
    """Each metric's mean over the results that have a finite value of it; ``None`` when
    some metric has none (every repeat failed before reporting it)."""
    means = {}
    for metric in metrics:
        values = [float(r[metric]) for r in results if r is not None and metric in r]
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return None
        means[metric] = sum(values) / len(values)
    return means


class StudySearch(OptunaSearch):
    """:class:`OptunaSearch` that repeats each configuration and sets constraints."""

    def __init__(
        self,
        *,
        repeats: int = 1,
        constraints: Sequence[ConstraintSpec] = (),
        study: str | None = None,
        epochs: int | None = None,
        search_storage: str = "journal",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        #: The spec's ``search_storage``: what a resuming driver reopens.
        self._search_storage = search_storage
        #: A trial's full budget: one that reported fewer epochs was stopped early.
        self._epochs = epochs
        #: The mtlstudy study whose journal this is: a resuming driver rebinds to its own.
        self._study = study
        self._repeats = repeats
        self._constraints = tuple(constraints)
        #: Configurations not yet told to Optuna, by the Tune trial id of their first
        #: repeat (which holds the Optuna trial); a told one is dropped.
        self._groups: dict[str, _Group] = {}
        self._group_of: dict[str, str] = {}
        #: The configuration still issuing repeats: only the newest one can be.
        self._open: str | None = None

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self._open is None:
            config = super().suggest(trial_id)
            if not isinstance(config, dict):
                return config  # None (wait) or FINISHED
            self._groups[trial_id] = _Group(config=config)
            self._open = trial_id
            self._pushed()
        leader = self._open
        group = self._groups[leader]
        self._group_of[trial_id] = leader
        repeat = group.issued
        group.issued += 1
        # The store's names for this configuration, to read Optuna and the store together.
        ot_trial = self._ot_trials[leader]
        ot_trial.set_user_attr("config_id", leader)
        ot_trial.set_user_attr("trial_ids", [*ot_trial.user_attrs.get("trial_ids", []), trial_id])
        if group.issued == self._repeats:
            self._open = None
        return {**group.config, "repeat": repeat, "config_id": leader}

    def _pushed(self) -> None:
        # A root at a URI gets the journal as soon as Optuna asks or is told: the experiment
        # state a resumed driver restores then never names an Optuna trial, or a result,
        # that the store's journal lacks.
        if self._study is not None:
            store.push_driver(self._study)

    def restore(self, checkpoint_path: str) -> None:
        """The pickled searcher, its Optuna study and open trials reattached to this
        driver's storage (the pickle names the journal of the driver that wrote it, or a
        database connection that is closed)."""
        super().restore(checkpoint_path)
        bound = None if self._study is None else store.driver_store(self._study)
        if bound is None or self._ot_study is None:
            return
        where = getattr(self, "_search_storage", "journal")  # pickled before it was kept
        self._storage = search_storage(bound.root, self._study, where)
        self._ot_study = optuna.load_study(
            study_name=self._ot_study.study_name,
            storage=self._storage,
            sampler=self._ot_study.sampler,
        )
        self._ot_trials = {
            tune_id: optuna.Trial(self._ot_study, trial._trial_id)
            for tune_id, trial in self._ot_trials.items()
        }

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        reported = isinstance(self.metric, str) and {self.metric, TRAINING_ITERATION} <= set(result)
        if not reported:
            return
        if self._repeats == 1:
            super().on_trial_result(trial_id, result)
            return
        # Repeats share one Optuna trial, which takes one value per step: their mean, told
        # with the configuration's result.
        leader = self._group_of.get(trial_id)
        value = float(result[self.metric])
        if leader is not None and math.isfinite(value):
            step = int(result[TRAINING_ITERATION])
            self._groups[leader].steps.setdefault(step, {})[trial_id] = value

    def _report_steps(self, leader: str, group: _Group) -> None:
        """Each step's mean over the repeats that reached it, as the configuration's
        intermediate values (what a sampler reads of a pruned configuration)."""
        for step, values in sorted(group.steps.items()):
            self._ot_trials[leader].report(sum(values.values()) / len(values), step)

    def _measured(self) -> list[str]:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        return list(dict.fromkeys([*metrics, *(c.metric for c in self._constraints)]))

    def _stopped_early(self, result: Mapping[str, Any] | None) -> bool:
        return (
            self._epochs is not None
            and result is not None
            and int(result.get("epoch", self._epochs)) < self._epochs
        )

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        leader = self._group_of.get(trial_id)
        if leader is None:
            return
        if result is not None and not error:
            # Tune gives a trial's last result to on_trial_complete alone: a stopped trial's
            # last value, and a finished one's last epoch, are reported here.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a step reported already stays as it was
                self.on_trial_result(trial_id, result)
        del self._group_of[trial_id]
        group = self._groups[leader]
        measured = self._measured()
        # Only what Optuna is told: the searcher's state is pickled into every checkpoint.
        kept = None if error or result is None else {k: result[k] for k in measured if k in result}
        group.results[trial_id] = kept
        group.stopped |= not error and self._stopped_early(result)
        if len(group.results) < self._repeats:
            return
        del self._groups[leader]
        mean = mean_result(list(group.results.values()), measured)
        self._report_steps(leader, group)
        if group.stopped and mean is not None:
            # No value and no error is Ray's PRUNED; the per-epoch values stay reported.
            super().on_trial_complete(leader, result=None, error=False)
            self._pushed()
            return
        if mean is not None and self._constraints:
            violations = constraint_values(self._constraints, mean)
            for name, value in (violations or {}).items():
                self._ot_trials[leader].set_constraint(name, value)
        super().on_trial_complete(leader, result=mean, error=mean is None)
        self._pushed()
