"""A study on Ray Tune: missing single-task baselines first, then the Optuna search under ASHA."""

from __future__ import annotations

import dataclasses
import functools
import os
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from cluster import ray_session
from models import get_task
from search_spaces import SearchSpace
from study import store
from study.analysis import flag_pareto
from study.errors import UserError
from study.run._baselines import Baselines, find_baselines
from study.run._engine import torch_extensions_dir, warm_up
from study.run._potentials import resolve_potentials
from study.run._progress import ProgressLine
from study.run._recorder import StoreRecorder
from study.run._search import StudySearch, journal_storage, tpe_sampler
from study.run._setup import TrialSetup
from study.run._trainable import CHECKPOINTS_KEPT, trainable
from study.spec import StageSpec, StudySpec
from study.store import load_trials, write_spec

__all__ = ["StudyOutcome", "run_study", "scheduler"]

References = dict[str, dict[str, float]]


@dataclass(frozen=True)
class StudyOutcome:
    #: The study's folder on this machine (a root at a URI: its local mirror).
    results: Path
    trials: int
    errors: int
    #: Where the study's results live: ``results``, or its folder at the root's URI.
    location: str = ""


def scheduler(spec: StudySpec, epochs: int) -> TrialScheduler:
    """The Tune scheduler the spec names, stopping trials by ``training_iteration``."""
    if spec.scheduler.name == "fifo":
        return FIFOScheduler()
    if spec.scheduler.name == "hyperband":
        return HyperBandScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    if spec.scheduler.name == "median":
        return MedianStoppingRule(
            time_attr="training_iteration",
            grace_period=min(spec.scheduler.grace_period, epochs),
            min_samples_required=2,
        )
    return ASHAScheduler(
        time_attr="training_iteration",
        max_t=epochs,
        grace_period=min(spec.scheduler.grace_period, epochs),
        reduction_factor=spec.scheduler.reduction_factor,
    )


def _concurrency(spec: StudySpec) -> int:
    """Trials at a time: the spec's, and no more than the cluster's CPUs can give workers
    (a multi-worker trial's own process holds none, so it never starves them)."""
    if spec.workers_per_trial == 1:
        return spec.concurrency
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    fits = int(cpus // (spec.workers_per_trial * spec.cpus_per_trial))
    return max(1, min(spec.concurrency, fits))


def _sampler(
    spec: StudySpec, space: SearchSpace, phase: str = "multi_task"
) -> optuna.samplers.BaseSampler:
    # Each stage of a staged study draws its own random start, not the stage before's.
    seed = spec.seed if phase == "multi_task" else spec.seed + zlib.crc32(phase.encode())
    if spec.sampler.name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler.name == "nsga2":
        # Generations of at least 4, and a few of them within the study's budget.
        return optuna.samplers.NSGAIISampler(
            seed=seed, population_size=max(4, min(50, spec.trials // 3))
        )
    tpe = spec.sampler
    # By default TPE models the results after a few random trials, even in a small study.
    startup = tpe.startup_trials or max(2, min(10, spec.trials // 2))
    return tpe_sampler(seed, startup, tpe.multivariate, tpe.constant_liar)


@dataclass(frozen=True)
class _Run:
    """How this driver runs the study: resuming a killed one or not, and what it shows
    (a progress line, and/or Tune's own table)."""

    resume: bool = False
    progress: Callable[[str], None] | None = None
    verbose: bool = False


def _run_config(
    spec: StudySpec,
    root: Path,
    phase: str,
    setup: TrialSetup,
    trials: int = 0,
    run: _Run = _Run(),
) -> tune.RunConfig:
    callbacks: list[tune.Callback] = [StoreRecorder(root, setup, setup.epochs)]
    if run.progress is not None:
        metric, mode = spec.objective if setup.kind == "multi_task" else ("val_loss", "min")
        callbacks.append(ProgressLine(phase, trials, setup.epochs, metric, mode, run.progress))
    return tune.RunConfig(
        name=phase,
        storage_path=store.join(spec.results, spec.name, "tune"),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        callbacks=callbacks,
        verbose=2 if run.verbose else 0,
    )


def _fit(
    tuner: Callable[[], tune.Tuner], setup: TrialSetup, root: Path, phase: str, run: _Run
) -> int:
    """Run a phase's experiment, or continue it where a killed driver left it: finished
    trials stay finished, unfinished ones restart from their last checkpoint, and the
    searcher (with its Optuna journal) keeps its history and its trial budget."""
    path = store.join(setup.spec.results, setup.spec.name, "tune", phase)
    if run.resume and tune.Tuner.can_restore(path):
        restored = tune.Tuner.restore(
            path, trainable=trainable(setup), resume_unfinished=True, resume_errored=True
        )
        return _errors(restored.fit())
    return _errors(tuner().fit())


def _errors(results: tune.ResultGrid) -> int:
    return sum(1 for result in results if result.error is not None)


def _run_baselines(
    spec: StudySpec, space: SearchSpace, root: Path, tasks: list[str], run: _Run
) -> int:
    """One single-task trial per task, at the search space's defaults with equal weights."""
    setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks), kind="single_task")
    method = "ew" if "ew" in space.methods else next(iter(space.methods))
    param_space = {**space.default_config(method), "task": tune.grid_search(tasks)}
    param_space["model"] = {**param_space["model"], **spec.baseline_model}
    return _fit(
        lambda: tune.Tuner(
            trainable(setup),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                max_concurrent_trials=_concurrency(spec),
                reuse_actors=True,
                scheduler=FIFOScheduler(),
            ),
            run_config=_run_config(spec, root, "single_task", setup, len(tasks), run),
        ),
        setup,
        root,
        "single_task",
        run,
    )


def _run_search(
    spec: StudySpec,
    space: SearchSpace,
    root: Path,
    baselines: Baselines | None,
    potentials: Mapping[str, float] | None,
    run: _Run,
) -> int:
    setup = TrialSetup(
        spec=spec,
        tasks=tuple(spec.tasks),
        references=None if baselines is None else baselines.metrics,
        baseline_trials=None if baselines is None else baselines.trials,
        potentials=potentials,
    )
    errors = _search_phase(setup, space, root, "multi_task", spec.trials, run)
    flag_pareto(root, spec.name, spec.search_objectives, spec.repeats)
    return errors


def _search_phase(
    setup: TrialSetup, space: SearchSpace, root: Path, phase: str, trials: int, run: _Run
) -> int:
    """``trials`` configurations Optuna proposes (its history in the study's journal), each
    run ``repeats`` times, under the spec's scheduler, as the Tune experiment ``phase``."""
    spec = setup.spec
    objectives = spec.search_objectives
    metrics, modes = [m for m, _ in objectives], [d for _, d in objectives]
    single = len(objectives) == 1
    search = StudySearch(
        repeats=spec.repeats,
        constraints=spec.constraints,
        space=space.define_by_run(),
        metric=metrics[0] if single else metrics,
        mode=modes[0] if single else modes,
        sampler=_sampler(spec, space, phase),
        points_to_evaluate=space.default_points() if spec.warm_start else None,
        study_name=phase,
        storage=journal_storage(root, spec.name),
        study=spec.name,
    )
    runs = trials * spec.repeats
    return _fit(
        lambda: tune.Tuner(
            trainable(setup),
            tune_config=tune.TuneConfig(
                search_alg=search,
                scheduler=scheduler(spec, setup.epochs),
                # A scheduler stops on one metric; several objectives run to the end.
                metric=metrics[0] if single else None,
                mode=modes[0] if single else None,
                num_samples=runs,
                max_concurrent_trials=_concurrency(spec),
                reuse_actors=True,
            ),
            run_config=_run_config(spec, root, phase, setup, runs, run),
        ),
        setup,
        root,
        phase,
        run,
    )


def _run_stages(
    spec: StudySpec, space: SearchSpace, root: Path, run: _Run, log: Callable[[str], None]
) -> int:
    """Staged training: each stage's trials start from the best model of the one before."""
    errors = 0
    init_from = None
    stages = spec.stages or ()
    for i, stage in enumerate(stages):
        if i > 0:
            init_from = _best_stage_model(root, spec, stages[i - 1])
        setup = TrialSetup(
            spec=spec,
            tasks=tuple(spec.tasks),
            stage=stage,
            init_from=init_from,
            models_dir=store.join(spec.results, spec.name, "models"),
        )
        log(f"stage {i + 1}/{len(stages)}, {stage.name}: {stage.trials} trial(s)")
        stage_space = space if stage.space is None else space.overridden(stage.space)
        errors += _search_phase(setup, stage_space, root, f"stage-{stage.name}", stage.trials, run)
    return errors


def _best_stage_model(root: Path, spec: StudySpec, stage: StageSpec) -> str:
    """The model file of a stage's best completed trial, by its task's KPI."""
    kpi = f"final.{stage.task}.{get_task(stage.task, spec.dataset.num_classes).kpi}"
    try:
        trials = load_trials(
            root / spec.name, where=f"stage == '{stage.name}' and status == 'completed'"
        )
    except (FileNotFoundError, ValueError):
        trials = None
    if trials is None or trials.empty or "model_path" not in trials:
        raise UserError(
            f"stage {stage.name} left no completed trial to start the next stage from; "
            f"see: mtlstudy query {root / spec.name}"
        )
    return str(trials.loc[trials[kpi].idxmax(), "model_path"])


def _warm_up_every_node() -> None:
    """Compile DeepSpeed's op once on each node (into its own cache), not once per trial;
    nodes that share a cache folder take turns on torch's build lock."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(warm_up)
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    ray.get(
        [
            task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote()
            for node in nodes
        ]
    )


def _quiet_ray_tune() -> None:
    # The leaderboard is the output; Tune's status boxes and its warning about forced
    # snapshots (num_to_keep keeps disk use flat) would bury it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # The experiment state a resume starts from lags the trials by at most this (s).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_study(
    spec: StudySpec,
    space: SearchSpace,
    address: str | None = None,
    log: Callable[[str], None] = print,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
    verbose: bool = False,
) -> StudyOutcome:
    """Run the whole study and return where its results are; with ``resume``, continue
    the experiments a killed driver left under the study's folder. ``progress`` gets a
    line on each change of a phase's trials; ``verbose`` shows Tune's own table."""
    remote = None
    if store.is_uri(spec.results):
        remote = store.RemoteRoot.open(spec.results, study=spec.name)
    # A root at a URI: the driver works on a local mirror and pushes it as it writes.
    root = remote.pull() if remote is not None else Path(spec.results).resolve()
    # Trial processes run in folders of their own: they get the root as an absolute path.
    spec = spec.model_copy(update={"results": remote.uri if remote else str(root)})
    sync = None if remote is None else functools.partial(remote.push, spec.name)
    store.bind_driver(spec.name, store.DriverStore(root, sync))
    run = _Run(resume=resume, progress=progress, verbose=verbose)
    try:
        outcome = _run_study(spec, space, root, address, run, log)
        return dataclasses.replace(outcome, location=store.join(spec.results, spec.name))
    finally:
        store.push_driver(spec.name)


def _run_study(
    spec: StudySpec,
    space: SearchSpace,
    root: Path,
    address: str | None,
    run: _Run,
    log: Callable[[str], None],
) -> StudyOutcome:
    write_spec(root, spec.name, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    store.push_driver(spec.name)  # an unwritable store fails here, before Ray starts
    env = {"TORCH_EXTENSIONS_DIR": str(torch_extensions_dir())}
    _quiet_ray_tune()
    baselines = None if spec.baselines == "none" else find_baselines(root, spec)
    if spec.baselines == "store" and baselines is not None and baselines.missing(spec.tasks):
        raise UserError(
            f"no single-task baseline of {baselines.missing(spec.tasks)} in {root} for "
            f"{spec.dataset_key}, {spec.architecture}; use baselines: auto to train them"
        )
    if spec.baselines != "auto":
        resolve_potentials(root, spec, space)  # fail before Ray starts
    errors = 0
    with ray_session(address=address, env_vars=env):
        log("warming DeepSpeed's op cache (compiles once per machine)")
        _warm_up_every_node()
        if baselines is not None and baselines.missing(spec.tasks):
            missing = baselines.missing(spec.tasks)
            log(f"training single-task baselines of {missing}")
            errors += _run_baselines(spec, space, root, missing, run)
            baselines = find_baselines(root, spec)
            if baselines.missing(spec.tasks):
                raise UserError(
                    f"a single-task baseline trial failed; see: mtlstudy query {root / spec.name}"
                )
        if spec.stages is not None:
            errors += _run_stages(spec, space, root, run, log)
            trials = sum(stage.trials for stage in spec.stages)
            return StudyOutcome(results=root / spec.name, trials=trials, errors=errors)
        potentials = resolve_potentials(root, spec, space)
        repeats = f" × {spec.repeats} seeds" if spec.repeats > 1 else ""
        log(
            f"searching: {spec.trials} multi-task configurations{repeats}, "
            f"{spec.concurrency} at a time"
        )
        errors += _run_search(spec, space, root, baselines, potentials, run)
    return StudyOutcome(results=root / spec.name, trials=spec.trials * spec.repeats, errors=errors)
