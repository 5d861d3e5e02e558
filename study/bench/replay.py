"""Search strategies replayed against the tabular benchmark (``study.bench.table``).

A replayed trial trains nothing: it reports, epoch by epoch, the table's validation Δm of
the configuration it was given (the mean over the table's seeds). A sampled configuration
is read as the nearest one the table holds of the same method (each range scaled to
[0, 1], on its log scale where it has one), so Optuna samples the default space itself,
with its parameter names and ranges.

The searchers and schedulers are the real ones (Tune's ``OptunaSearch`` over Optuna's
samplers, ``ASHAScheduler``, ``HyperBandScheduler``), driven by :func:`replay`, a small
deterministic loop in place of Tune's controller, which costs seconds a search: every
trial-epoch takes one tick, ``concurrency`` trials run at a time, results of the same tick
arrive in the order their trials started, and a freed slot goes first to the trial the
scheduler chooses (a paused HyperBand trial), then to a new trial from the searcher. The
calls are the controller's: ``on_trial_add``, ``on_trial_result`` (then the searcher's
``on_trial_result`` unless stopped), ``on_trial_complete`` for a trial that ends, and
``on_trial_remove`` for a paused one that a HyperBand bracket stops.

A search stops once its trials have reported ``budget`` trial-epochs. Its record is every
report in order and, for each trial that ran its full epochs, the trial-epochs spent when
it finished and its final Δm: the anytime curve is the best final Δm found so far.
"""

from __future__ import annotations

import functools
import heapq
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search_spaces import SearchSpace
from study.bench.table import METHODS, table_space

__all__ = [
    "STRATEGIES",
    "Replay",
    "Search",
    "TableCurves",
    "replay",
    "replay_with_tune",
    "run_strategy",
    "strategy_parts",
]

#: Strategy name: (sampler, scheduler, multivariate TPE with the constant liar).
STRATEGIES: dict[str, tuple[str, str, bool]] = {
    "random": ("random", "fifo", False),
    "tpe": ("tpe", "fifo", False),
    "tpe+asha": ("tpe", "asha", False),
    "tpe+hyperband": ("tpe", "hyperband", False),
    "mvtpe+cl+asha": ("tpe", "asha", True),
}
_METRIC = "delta_m"
_TIME = "training_iteration"


@dataclass(frozen=True)
class TableCurves:
    """Each configuration of a table (flat, define-by-run names) and its Δm per epoch,
    averaged over the table's seeds."""

    configs: list[dict[str, Any]]
    curves: np.ndarray  # (configurations, epochs)
    space: SearchSpace
    #: Each configuration's final Δm per seed (configurations, seeds), where known.
    seed_finals: np.ndarray | None = None

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, space: SearchSpace | None = None) -> TableCurves:
        params = [c for c in frame.columns if c == "method" or "/" in c and _is_param(c)]
        means = frame.groupby([*params, "epoch"], dropna=False)[_METRIC].mean().unstack("epoch")
        last = frame[frame["epoch"] == frame["epoch"].max()]
        finals = None
        if "seed" in frame.columns:
            finals = last.groupby([*params, "seed"], dropna=False)[_METRIC].mean().unstack("seed")
            finals = finals.to_numpy(dtype=float) if finals.index.equals(means.index) else None
        configs = [
            {k: v for k, v in zip(params, key, strict=True) if not _missing(v)}
            for key in means.index
        ]
        present = sorted({c["method"] for c in configs})
        space = space or table_space([m for m in METHODS if m in present] or present)
        return cls(
            configs=configs, curves=means.to_numpy(dtype=float), space=space, seed_finals=finals
        )

    @property
    def epochs(self) -> int:
        return self.curves.shape[1]

    @property
    def best_final(self) -> float:
        """The best final Δm any configuration of the table reaches."""
        return float(np.nanmax(self.curves[:, -1]))

    def lookup(self, config: Mapping[str, Any]) -> int:
        """The index of the table's configuration nearest to a sampled one, same method."""
        flat = _flatten(config)
        method = flat["method"]
        if method not in self._coordinates:
            raise ValueError(f"the table holds no configuration of {method!r}")
        indices, names, points = self._coordinates[method]
        if not names:
            return indices[0]
        point = np.array([self._scaled(k, flat[k]) for k in names])
        return indices[int(np.argmin(((points - point) ** 2).sum(axis=1)))]

    @functools.cached_property
    def _coordinates(self) -> dict[str, tuple[list[int], list[str], np.ndarray]]:
        """Per method: its configurations' indices, parameter names and scaled values."""
        found: dict[str, tuple[list[int], list[str], np.ndarray]] = {}
        for method in dict.fromkeys(c["method"] for c in self.configs):
            indices = [i for i, c in enumerate(self.configs) if c["method"] == method]
            names = sorted(k for k in self.configs[indices[0]] if k != "method")
            points = np.array(
                [[self._scaled(k, self.configs[i][k]) for k in names] for i in indices]
            ).reshape(len(indices), len(names))
            found[method] = (indices, names, points)
        return found

    def _scaled(self, name: str, value: float) -> float:
        group, param_name = name.split("/", 1)
        params = getattr(self.space, group) if group in ("optim", "model") else None
        param = (params or self.space.methods.get(group, {})).get(param_name)
        if param is None or param.type == "categorical":
            return float(value)
        if param.log:
            low, high = math.log(param.low), math.log(param.high)
            return (math.log(value) - low) / (high - low)
        return (value - param.low) / (param.high - param.low)


def _is_param(column: str) -> bool:
    return column.split("/")[0] == "optim" or column.split("/")[0] in _all_methods()


def _all_methods() -> set[str]:
    from models import balancing

    return set(balancing.list_methods())


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


@dataclass
class Search:
    """One replayed search: each report as (trial-epochs so far, trial index, epoch, Δm)
    in order, each finished trial as (trial-epochs when it finished, final Δm), and the
    table index of each trial's configuration."""

    reports: list[tuple[int, int, int, float]] = field(default_factory=list)
    finals: list[tuple[int, float]] = field(default_factory=list)
    trials: list[int] = field(default_factory=list)

    def stops(self) -> dict[int, int]:
        """Each trial's last epoch reported (its stop, or its full epochs)."""
        last: dict[int, int] = {}
        for _, trial, epoch, _ in self.reports:
            last[trial] = epoch
        return last


class _Controller:
    """What the schedulers ask of Tune's controller: the trials, and stopping one."""

    def __init__(self, replay: Replay) -> None:
        self._replay = replay

    def get_trials(self) -> list[Any]:
        return list(self._replay.trials)

    def get_live_trials(self) -> list[Any]:
        from ray.tune.experiment import Trial

        return [t for t in self._replay.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)]

    def stop_trial(self, trial: Any) -> None:
        self._replay.stop(trial)


class Replay:
    """One search's state: the searcher, the scheduler and the trials they were given."""

    def __init__(
        self,
        table: TableCurves,
        searcher: Any,
        scheduler: Any,
        concurrency: int,
        max_trials: int | None = None,
    ) -> None:
        self.max_trials = max_trials
        self.table = table
        self.searcher = searcher
        self.scheduler = scheduler
        self.concurrency = concurrency
        self.trials: list[Any] = []
        self.record = Search()
        self._index: dict[str, int] = {}
        self._controller = _Controller(self)

    def stop(self, trial: Any) -> None:
        """Tune's ``stop_trial`` for a trial that is not running (a paused one)."""
        from ray.tune.experiment import Trial

        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self._controller, trial)
            self.searcher.on_trial_complete(trial.trial_id, result=trial.last_result or None)
            trial.set_status(Trial.TERMINATED)

    def _new_trial(self) -> Any | None:
        from ray.tune.experiment import Trial

        if self.max_trials is not None and len(self.trials) >= self.max_trials:
            return None
        trial_id = f"{len(self.trials):05d}"
        config = self.searcher.suggest(trial_id)
        if config is None:
            return None
        trial = Trial("replay", config=config, trial_id=trial_id, stub=True)
        self._index[trial_id] = self.table.lookup(config)
        self.record.trials.append(self._index[trial_id])
        self.trials.append(trial)
        self.scheduler.on_trial_add(self._controller, trial)
        return trial

    def _next_to_run(self) -> Any | None:
        chosen = self.scheduler.choose_trial_to_run(self._controller)
        if chosen is not None:
            return chosen
        added = self._new_trial()
        if added is None:
            return None
        return self.scheduler.choose_trial_to_run(self._controller) or added

    def run(self, budget: int) -> Search:
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import TrialScheduler

        epochs = self.table.epochs
        spent = 0
        clock = 0
        started = 0
        # (tick of its next report, start order, trial): same tick, earliest start first.
        running: list[tuple[int, int, Any]] = []
        done: dict[str, int] = {}
        while spent < budget:
            while len(running) < self.concurrency:
                trial = self._next_to_run()
                if trial is None:
                    break
                trial.set_status(Trial.RUNNING)
                heapq.heappush(running, (clock + 1, started, trial))
                started += 1
            if not running:
                break
            clock, order, trial = heapq.heappop(running)
            epoch = done.get(trial.trial_id, 0) + 1
            done[trial.trial_id] = epoch
            value = float(self.table.curves[self._index[trial.trial_id], epoch - 1])
            result = {_METRIC: value, _TIME: epoch, "done": epoch == epochs}
            spent += 1
            number = int(trial.trial_id)
            self.record.reports.append((spent, number, epoch, value))
            decision = self.scheduler.on_trial_result(self._controller, trial, result)
            if decision != TrialScheduler.STOP:
                self.searcher.on_trial_result(trial.trial_id, result)
            trial.update_last_result(result)
            if epoch == epochs:
                self.record.finals.append((spent, value))
                decision = TrialScheduler.STOP
            if decision == TrialScheduler.CONTINUE:
                heapq.heappush(running, (clock + 1, order, trial))
            elif decision == TrialScheduler.PAUSE:
                trial.set_status(Trial.PAUSED)
            else:
                self.scheduler.on_trial_complete(self._controller, trial, result)
                self.searcher.on_trial_complete(trial.trial_id, result=result)
                trial.set_status(Trial.TERMINATED)
        return self.record


def _scheduler(name: str, epochs: int, grace_period: int, reduction_factor: float) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    if name == "fifo":
        return FIFOScheduler()
    if name == "hyperband":
        return HyperBandScheduler(
            time_attr=_TIME,
            max_t=epochs,
            reduction_factor=reduction_factor,
            metric=_METRIC,
            mode="max",
        )
    return ASHAScheduler(
        time_attr=_TIME,
        max_t=epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        metric=_METRIC,
        mode="max",
    )


def _searcher(table: TableCurves, sampler: str, seed: int, startup: int, joint: bool) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from study.run import tpe_sampler

    if sampler == "random":
        chosen: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        chosen = tpe_sampler(seed, startup, multivariate=joint, constant_liar=joint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OptunaSearch(
            space=table.space.define_by_run(), metric=_METRIC, mode="max", sampler=chosen
        )


def replay(
    table: TableCurves,
    searcher: Any,
    scheduler: Any,
    budget: int,
    concurrency: int = 4,
    max_trials: int | None = None,
) -> Search:
    """Run one search against the table for ``budget`` trial-epochs (and no more than
    ``max_trials`` trials, as Tune's ``num_samples``)."""
    if getattr(scheduler, "_metric", None) is None and hasattr(scheduler, "set_search_properties"):
        scheduler.set_search_properties(_METRIC, "max")
    return Replay(table, searcher, scheduler, concurrency, max_trials).run(budget)


def _table_trainable(config: dict[str, Any], table: TableCurves) -> None:
    from ray import tune

    curve = table.curves[table.lookup(config)]
    for epoch, value in enumerate(curve, start=1):
        tune.report({_METRIC: float(value), "table_index": table.lookup(config), "epoch": epoch})


def replay_with_tune(
    table: TableCurves, searcher: Any, scheduler: Any, trials: int, storage: Path
) -> Search:
    """The same replay through Tune's own controller (``Tuner.fit``), one trial at a time,
    on a Ray already started: what :func:`replay`'s loop stands in for."""
    from ray import tune

    record = Search()
    order: dict[str, int] = {}

    class _Reports(tune.Callback):
        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            if trial.trial_id not in order:
                order[trial.trial_id] = len(order)
                record.trials.append(int(result["table_index"]))
            epoch = int(result[_TIME])
            value = float(result[_METRIC])
            record.reports.append((len(record.reports) + 1, order[trial.trial_id], epoch, value))
            if epoch == table.epochs:
                record.finals.append((len(record.reports), value))

    tuner = tune.Tuner(
        tune.with_parameters(_table_trainable, table=table),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            # The searcher and the scheduler carry the metric and the mode.
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=1,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage), name="replay", verbose=0, callbacks=[_Reports()]
        ),
    )
    errors = [result.error for result in tuner.fit() if result.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} replayed trial(s) failed: {errors[0]}")
    return record


def run_strategy(
    table: TableCurves,
    strategy: str,
    seed: int,
    budget: int,
    concurrency: int = 4,
    grace_period: int = 1,
    reduction_factor: float = 2.0,
    startup_trials: int = 10,
) -> Search:
    """One search of ``strategy`` with this sampler seed."""
    searcher, scheduler = strategy_parts(
        table, strategy, seed, grace_period, reduction_factor, startup_trials
    )
    return replay(table, searcher, scheduler, budget, concurrency)


def strategy_parts(
    table: TableCurves,
    strategy: str,
    seed: int,
    grace_period: int = 1,
    reduction_factor: float = 2.0,
    startup_trials: int = 10,
) -> tuple[Any, Any]:
    """A strategy's Tune searcher (Optuna's sampler with this seed) and scheduler."""
    sampler, stopping, joint = STRATEGIES[strategy]
    return (
        _searcher(table, sampler, seed, startup_trials, joint),
        _scheduler(stopping, table.epochs, grace_period, reduction_factor),
    )
