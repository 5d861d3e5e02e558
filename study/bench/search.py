"""Search strategies at a fixed trial-epoch budget: TPE with ASHA, TPE alone, random search.

Every search is a real Ray Tune experiment (``OptunaSearch`` over the default search space
restricted to :data:`METHODS`, the study's own trainable, sampler and scheduler) on the
same synthetic data against the same single-task references, trained once per bench.
Only the sampler's seed differs between searches of a strategy: the spec's seed also
seeds the data, the model's initialisation and the batch order, so it stays fixed and Δm
values stay comparable.

A trial-epoch is one epoch one trial reported. A search stops once its trials have reported
``budget`` of them, counting the epochs of trials that ASHA stops early. Each search's
reports are kept in report order as (cumulative trial-epochs, Δm); the figures come from
:func:`summarise` (in ``_search_figures``), a pure function of those sequences.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from cluster import ray_session
from search_spaces import SearchSpace, load_space
from study.bench._search_figures import MARGIN, Reach, format_table, reach, summarise, threshold
from study.bench.search_levers import Levers
from study.errors import UserError
from study.run import (
    Baselines,
    TrialSetup,
    find_baselines,
    run_study,
    scheduler,
    torch_extensions_dir,
    tpe_sampler,
    trainable,
)
from study.spec import DatasetSpec, SamplerSpec, SchedulerSpec, StudySpec

__all__ = [
    "STRATEGIES",
    "Levers",
    "Reach",
    "format_table",
    "measure_search",
    "reach",
    "summarise",
    "threshold",
]

#: Strategy name: (sampler, scheduler), as a spec names them.
STRATEGIES: dict[str, tuple[str, str]] = {
    "tpe+asha": ("tpe", "asha"),
    "tpe": ("tpe", "fifo"),
    "random": ("random", "fifo"),
}
#: Loss-level and KPI methods: one backward per step, so every trial-epoch costs about the
#: same and the budget in trial-epochs is also a budget in compute. amtl is left out: it
#: needs potentials, which the references would have to be turned into first.
METHODS = ("ew", "rlw", "dwa", "gls", "uw", "famo", "dtp")
TASKS = ("semseg", "depth", "normals")


class _TrialEpochs(tune.Callback):
    """Counts a search's trial-epochs as the driver receives them (a report that ASHA
    answers with a stop counts too) and keeps (cumulative trial-epochs, Δm) in order."""

    def __init__(self) -> None:
        self.reports: list[tuple[int, float]] = []
        #: Trial id: (its index in first-report order, its configuration).
        self.trials: dict[str, tuple[int, dict[str, Any]]] = {}
        #: The index of the trial that sent each report.
        self.report_trials: list[int] = []

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        # Tune sends a trial's repeated last result (when its function returns) to the
        # stopper and the scheduler but not here, so each report is one epoch.
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = (len(self.trials), _plain(trial.config))
        self.report_trials.append(self.trials[trial.trial_id][0])
        self.reports.append((len(self.reports) + 1, float(result.get("delta_m", math.nan))))


def _plain(value: Any) -> Any:
    """A configuration as JSON can hold it."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class _Budget(tune.Stopper):
    """Ends the whole search once its trials have reported ``budget`` trial-epochs.

    Tune checks ``stop_all`` after each event, and each event carries one report, so a
    search ends at the budget: the reports that the other running trials had not yet
    sent are dropped with them (their unfinished epochs are not counted)."""

    def __init__(self, counter: _TrialEpochs, budget: int) -> None:
        self.counter = counter
        self.budget = budget

    def __call__(self, trial_id: str, result: dict) -> bool:
        return self.stop_all()

    def stop_all(self) -> bool:
        return len(self.counter.reports) >= self.budget


def _optuna_sampler(name: str, seed: int, levers: Levers) -> optuna.samplers.BaseSampler:
    """The strategy's sampler; only the search seed differs between its searches."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return tpe_sampler(seed, levers.startup_trials, levers.multivariate, levers.constant_liar)


def _search(
    setup: TrialSetup,
    space: SearchSpace,
    strategy: str,
    seed: int,
    budget: int,
    storage: Path,
    levers: Levers | None = None,
) -> dict[str, Any]:
    levers = levers or Levers()
    sampler, stopping = STRATEGIES[strategy]
    spec = setup.spec.model_copy(
        update={
            "sampler": SamplerSpec(name=sampler),
            "scheduler": SchedulerSpec(
                name=stopping,
                grace_period=levers.grace_period,
                reduction_factor=levers.reduction_factor,
            ),
        }
    )
    setup = TrialSetup(
        spec=spec,
        tasks=setup.tasks,
        references=setup.references,
        baseline_trials=setup.baseline_trials,
    )
    metric, mode = spec.objective
    counter = _TrialEpochs()
    search = OptunaSearch(
        space=space.define_by_run(),
        metric=metric,
        mode=mode,
        # The sampler alone gets the search seed: the spec's seed is the data's.
        sampler=_optuna_sampler(sampler, seed, levers),
    )
    tuner = tune.Tuner(
        trainable(setup),
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=scheduler(spec, setup.epochs),
            metric=metric,
            mode=mode,
            # Every trial that reports spends at least one trial-epoch: the budget, not
            # this, ends a search unless half its trials fail before their first report.
            num_samples=2 * budget,
            max_concurrent_trials=spec.concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"{strategy}-seed{seed}",
            storage_path=str(storage),
            stop=_Budget(counter, budget),
            callbacks=[counter],
            # A diverged trial is a result of the search, not something to retry.
            failure_config=tune.FailureConfig(max_failures=0),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=0,
        ),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    return {
        "strategy": strategy,
        "seed": seed,
        "trials": len(counter.trials),
        "errors": sum(1 for result in grid if result.error is not None),
        "trial_epochs": len(counter.reports),
        "wall_s": round(time.perf_counter() - started, 1),
        "reports": [[epochs, round(value, 4)] for epochs, value in counter.reports],
        # Which trial sent each report, and each trial's configuration, in that order.
        "report_trials": counter.report_trials,
        "configs": [config for _, config in counter.trials.values()],
    }


def _references(spec: StudySpec, space: SearchSpace, log: Callable[[str], None]) -> Baselines:
    """Single-task references trained once, the way a study trains them (its one
    multi-task trial is the price of that path)."""
    run_study(spec.model_copy(update={"trials": 1}), space, log=log)
    baselines = find_baselines(Path(spec.results), spec)
    if baselines.missing(spec.tasks):
        raise UserError(f"no single-task reference of {baselines.missing(spec.tasks)} trained")
    return baselines


def _check(
    seeds: int, budget: int, epochs: int, concurrency: int, train_samples: int, image_size: int
) -> None:
    if min(seeds, budget, epochs, concurrency) < 1:
        raise ValueError("seeds, budget, epochs and concurrency must be positive")
    if not 16 <= image_size <= 1024:
        raise ValueError(f"image size {image_size}: expected 16 to 1024 pixels")
    if budget < epochs:
        raise ValueError(f"a budget of {budget} trial-epochs is less than one trial ({epochs})")
    if train_samples < 8:
        raise ValueError(f"train samples {train_samples}: expected at least 8")


def measure_search(
    seeds: int = 3,
    budget: int = 80,
    epochs: int = 4,
    results: Path | None = None,
    train_samples: int = 256,
    image_size: int = 32,
    concurrency: int = 2,
    margin: float = MARGIN,
    tasks: Sequence[str] = TASKS,
    methods: Sequence[str] = METHODS,
    levers: Levers | None = None,
    strategies: Sequence[str] = tuple(STRATEGIES),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the references, then for each search seed run every strategy for ``budget``
    trial-epochs; the searches' reports and :func:`summarise`'s figures."""
    _check(seeds, budget, epochs, concurrency, train_samples, image_size)
    levers = levers or Levers()
    levers.check(epochs)
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ValueError(f"strategies {list(strategies)}: expected some of {list(STRATEGIES)}")
    if not margin > 0:
        raise ValueError(f"margin {margin}: expected a positive number of Δm points")
    if results is not None and results.exists() and any(results.iterdir()):
        raise ValueError(f"{results}: not empty; the bench writes fresh results there")
    load_before = os.getloadavg()[0]
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's status boxes would bury the log
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtlstudy-bench-search-") as scratch:
        root = (Path(scratch) if results is None else results).resolve()
        spec = StudySpec(
            name="bench-search",
            dataset=DatasetSpec(
                image_size=image_size,
                train_samples=train_samples,
                val_samples=max(8, train_samples // 4),
            ),
            tasks=list(tasks),
            model={"backbone": "regnetx_002"},
            # What a study of this budget without early stopping would ask for; TPE's
            # random start-up is a share of it.
            trials=budget // epochs,
            concurrency=concurrency,
            cpus_per_trial=1,
            epochs=epochs,
            batch_size=min(32, train_samples),
            scheduler=SchedulerSpec(name="fifo"),
            baselines="auto",
            max_failures=0,
            results=str(root),
        )
        space = load_space("default").restricted_to(list(methods))
        log(f"references: {len(tasks)} single-task trials × {epochs} epochs")
        baselines = _references(spec, space, log)
        setup = TrialSetup(
            spec=spec,
            tasks=tuple(spec.tasks),
            references=baselines.metrics,
            baseline_trials=baselines.trials,
        )
        searches = []
        env = {"TORCH_EXTENSIONS_DIR": str(torch_extensions_dir())}
        with ray_session(env_vars=env):
            # Seed by seed, so load that comes and goes on the machine hits every strategy.
            for seed in range(seeds):
                for strategy in strategies:
                    search = _search(
                        setup, space, strategy, seed, budget, root / "searches", levers
                    )
                    best = max((v for _, v in search["reports"]), default=math.nan)
                    log(
                        f"{strategy} seed {seed}: {search['trials']} trials, "
                        f"{search['trial_epochs']} trial-epochs, best Δm {best:+.2f} %, "
                        f"{search['wall_s']:.0f} s"
                    )
                    searches.append(search)
    runs = {s: [r["reports"] for r in searches if r["strategy"] == s] for s in strategies}
    return {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cpus",
        "date": date.today().isoformat(),
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "settings": {
            "seeds": seeds,
            "budget": budget,
            "epochs": epochs,
            "concurrency": concurrency,
            "image_size": image_size,
            "train_samples": train_samples,
            "val_samples": spec.dataset.val_samples,
            "tasks": list(tasks),
            "methods": list(methods),
            "levers": dataclasses.asdict(levers),
        },
        "references": baselines.trials,
        "searches": searches,
        "summary": summarise(runs, budget, margin),
        "wall_s": round(time.perf_counter() - started, 1),
    }
