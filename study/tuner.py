"""A study on Ray Tune: single-task references first, then the Optuna search under ASHA."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from cluster import ray_session
from models import get_task
from search_spaces import SearchSpace
from study.engine import torch_extensions_dir, warm_up
from study.errors import UserError
from study.potentials import resolve_potentials
from study.recorder import StoreRecorder
from study.spec import StudySpec
from study.store import load_trials
from study.trial import TrialSetup, trial_function

__all__ = ["StudyOutcome", "reference_metrics", "run_study"]

References = dict[str, dict[str, float]]


@dataclass(frozen=True)
class StudyOutcome:
    results: Path
    trials: int
    errors: int


def _scheduler(spec: StudySpec) -> TrialScheduler:
    if spec.scheduler.name == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=spec.epochs,
        grace_period=min(spec.scheduler.grace_period, spec.epochs),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _trainable(setup: TrialSetup) -> Any:
    return tune.with_resources(
        tune.with_parameters(trial_function, setup=setup), {"cpu": setup.spec.cpus_per_trial}
    )


def _run_config(spec: StudySpec, root: Path, phase: str, setup: TrialSetup) -> tune.RunConfig:
    return tune.RunConfig(
        name=phase,
        storage_path=str(root / spec.name / "tune"),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        callbacks=[StoreRecorder(root, setup, spec.epochs)],
        verbose=0,
    )


def reference_metrics(root: Path, spec: StudySpec) -> References | None:
    """Final metrics of this study's completed single-task trials, if every task has one."""
    try:
        trials = load_trials(
            root / spec.name, where="kind == 'single_task' and status == 'completed'"
        )
    except FileNotFoundError:
        return None
    references: References = {}
    for task in spec.tasks:
        rows = trials[trials["tasks"].map(lambda names, t=task: list(names) == [t])]
        if rows.empty:
            return None
        last = rows.iloc[-1]
        metrics = get_task(task, spec.dataset.num_classes).metrics
        values = {m.name: float(last[f"final.{task}.{m.name}"]) for m in metrics}
        # A relative change against 0 (an untrained reference's δ1, say) is undefined.
        references[task] = {m: v for m, v in values.items() if math.isfinite(v) and v != 0}
        if not references[task]:
            raise UserError(
                f"the single-task reference for {task!r} has no non-zero metric {values}; "
                "train it longer (epochs, train_samples)"
            )
    return references


def _run_references(spec: StudySpec, space: SearchSpace, root: Path) -> int:
    """One single-task trial per task, at the search space's defaults with equal weights."""
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks), kind="single_task")
    method = "ew" if "ew" in space.methods else next(iter(space.methods))
    param_space = {**space.default_config(method), "task": tune.grid_search(list(spec.tasks))}
    tuner = tune.Tuner(
        _trainable(setup),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=spec.concurrency, reuse_actors=True, scheduler=FIFOScheduler()
        ),
        run_config=_run_config(spec, root, "single_task", setup),
    )
    return sum(1 for result in tuner.fit() if result.error is not None)


def _run_search(
    spec: StudySpec,
    space: SearchSpace,
    root: Path,
    references: Mapping[str, Any] | None,
    potentials: Mapping[str, float] | None,
) -> int:
    setup = TrialSetup(
        spec=spec, tasks=tuple(spec.tasks), references=references, potentials=potentials
    )
    metric, mode = spec.objective
    # TPE models the results after a few random trials, even in a small study.
    startup = max(2, min(10, spec.trials // 2))
    search = OptunaSearch(
        space=space.define_by_run(),
        metric=metric,
        mode=mode,
        sampler=optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup),
    )
    tuner = tune.Tuner(
        _trainable(setup),
        tune_config=tune.TuneConfig(
            search_alg=search,
            scheduler=_scheduler(spec),
            metric=metric,
            mode=mode,
            num_samples=spec.trials,
            max_concurrent_trials=spec.concurrency,
            reuse_actors=True,
        ),
        run_config=_run_config(spec, root, "multi_task", setup),
    )
    return sum(1 for result in tuner.fit() if result.error is not None)


def _quiet_ray_tune() -> None:
    # The leaderboard is the output; Tune's status boxes and its warning about forced
    # snapshots (num_to_keep=1 keeps disk use flat) would bury it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_study(
    spec: StudySpec,
    space: SearchSpace,
    address: str | None = None,
    log: Callable[[str], None] = print,
) -> StudyOutcome:
    """Run the whole study and return where its results are."""
    root = Path(spec.results).resolve()
    env = {"TORCH_EXTENSIONS_DIR": str(torch_extensions_dir())}
    _quiet_ray_tune()
    if not spec.single_task_references:
        resolve_potentials(root, spec, space)  # fail before Ray starts
    errors = 0
    with ray_session(address=address, env_vars=env):
        log("warming DeepSpeed's op cache (compiles once per machine)")
        warm_up()
        references = None
        if spec.single_task_references:
            references = reference_metrics(root, spec)
            if references is None:
                log(f"training {len(spec.tasks)} single-task references")
                errors += _run_references(spec, space, root)
                references = reference_metrics(root, spec)
            if references is None:
                raise UserError(
                    f"a single-task reference trial failed; see: mtlstudy query {root / spec.name}"
                )
        potentials = resolve_potentials(root, spec, space)
        log(f"searching: {spec.trials} multi-task trials, {spec.concurrency} at a time")
        errors += _run_search(spec, space, root, references, potentials)
    return StudyOutcome(results=root / spec.name, trials=spec.trials, errors=errors)
