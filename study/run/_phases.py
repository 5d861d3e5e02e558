"""The phases of a study on Ray Tune: single-task baselines, the Optuna search under the
spec's scheduler, or staged training; each one Tune experiment that a killed driver can
resume."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)

from models import get_task
from search_spaces import SearchSpace
from study import store
from study.analysis import flag_pareto
from study.errors import UserError
from study.run._baselines import Baselines
from study.run._progress import ProgressLine
from study.run._recorder import StoreRecorder
from study.run._search import StudySearch, optuna_study_name, search_storage, tpe_sampler
from study.run._setup import TrialSetup
from study.run._signals import raise_if_stopped
from study.run._signed_state import SignTuneState, checked_tune_state
from study.run._tensorboard import TensorBoardLogger
from study.run._trainable import CHECKPOINTS_KEPT, trainable
from study.spec import StageSpec, StudySpec
from study.store import load_trials

__all__ = [
    "ClusterTooSmall",
    "RunOptions",
    "baselines_phase",
    "check_gpus",
    "scheduler",
    "search_phase",
    "stages_phase",
]


class ClusterTooSmall(UserError):
    """The cluster cannot give one trial the GPUs its spec asks for."""


def _gpus(count: float) -> str:
    return f"{count:g} GPU" + ("s" if count > 1 else "")


def check_gpus(
    spec: StudySpec, total: Mapping[str, float], nodes: Sequence[Mapping[str, float]]
) -> None:
    """Refuse a spec whose trials could never be placed: it asks for GPUs and the cluster
    (``total``, Ray's cluster resources) has none or too few for one trial's workers, or no
    node (each one's resources in ``nodes``) has one worker's share."""
    need = spec.gpus_per_worker
    if need == 0:
        return
    field = f"field 'gpus_per_worker': the spec asks for {_gpus(need)} per worker"
    have = float(total.get("GPU", 0))
    if have == 0:
        raise ClusterTooSmall(
            f"{field}, but the cluster has none; set gpus_per_worker: 0 or use a cluster with GPUs"
        )
    most = max((float(node.get("GPU", 0)) for node in nodes), default=0.0)
    if most < need:
        raise ClusterTooSmall(
            f"{field}, but no node has more than {_gpus(most)}; lower gpus_per_worker or "
            "use larger nodes"
        )
    trial = need * spec.workers_per_trial
    if have < trial:
        raise ClusterTooSmall(
            f"{field} and {spec.workers_per_trial} workers per trial ({_gpus(trial)}), "
            f"but the cluster has {_gpus(have)}; lower workers_per_trial or gpus_per_worker"
        )


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
    """Trials at a time: the spec's, and no more than the cluster's CPUs and GPUs can give
    workers (a multi-worker trial's own process holds none, so it never starves them)."""
    if spec.workers_per_trial == 1:
        return spec.concurrency
    import ray

    cluster = ray.cluster_resources()
    fits = int(float(cluster.get("CPU", 0)) // (spec.workers_per_trial * spec.cpus_per_trial))
    if spec.gpus_per_worker > 0:
        gpus = float(cluster.get("GPU", 0)) // (spec.workers_per_trial * spec.gpus_per_worker)
        fits = min(fits, int(gpus))
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
class RunOptions:
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
    run: RunOptions = RunOptions(),
) -> tune.RunConfig:
    callbacks: list[tune.Callback] = [
        StoreRecorder(root, setup, setup.epochs),
        TensorBoardLogger(setup),
    ]
    if not store.is_uri(spec.results):
        callbacks.append(SignTuneState(spec.name, phase, root / spec.name / "tune" / phase))
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
    tuner: Callable[[], tune.Tuner], setup: TrialSetup, root: Path, phase: str, run: RunOptions
) -> int:
    """Run a phase's experiment, or continue it where a killed driver left it: finished
    trials stay finished, unfinished ones restart from their last checkpoint, and the
    searcher (with its Optuna storage) keeps its history and its trial budget."""
    spec = setup.spec
    path = store.join(spec.results, spec.name, "tune", phase)
    local = None if store.is_uri(spec.results) else root / spec.name / "tune" / phase
    if run.resume and tune.Tuner.can_restore(path):
        if local is not None:  # nothing of Tune's is unpickled before this passes
            checked_tune_state(local, spec.name)
        restored = tune.Tuner.restore(
            path, trainable=trainable(setup), resume_unfinished=True, resume_errored=True
        )
        results = restored.fit()
    else:
        results = tuner().fit()
    if local is not None:  # what Tune wrote after its loop's last step
        store.sign_state(local, store.study_key(spec.name))
    raise_if_stopped()  # a stopped experiment's results are partial: start no other phase
    return _errors(results)


def _errors(results: tune.ResultGrid) -> int:
    return sum(1 for result in results if result.error is not None)


def baselines_phase(
    spec: StudySpec, space: SearchSpace, root: Path, tasks: list[str], run: RunOptions
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


def search_phase(
    spec: StudySpec,
    space: SearchSpace,
    root: Path,
    baselines: Baselines | None,
    potentials: Mapping[str, float] | None,
    run: RunOptions,
) -> int:
    setup = TrialSetup(
        spec=spec,
        tasks=tuple(spec.tasks),
        references=None if baselines is None else baselines.metrics,
        baseline_trials=None if baselines is None else baselines.trials,
        potentials=potentials,
    )
    errors = _optuna_phase(setup, space, root, "multi_task", spec.trials, run)
    flag_pareto(root, spec.name, spec.search_objectives, spec.repeats)
    return errors


def _optuna_phase(
    setup: TrialSetup, space: SearchSpace, root: Path, phase: str, trials: int, run: RunOptions
) -> int:
    """``trials`` configurations Optuna proposes (its history in the spec's storage), each
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
        study_name=optuna_study_name(spec.search_storage, spec.name, phase),
        storage=search_storage(root, spec.name, spec.search_storage),
        study=spec.name,
        epochs=setup.epochs,
        search_storage=spec.search_storage,
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


def stages_phase(
    spec: StudySpec, space: SearchSpace, root: Path, run: RunOptions, log: Callable[[str], None]
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
        errors += _optuna_phase(setup, stage_space, root, f"stage-{stage.name}", stage.trials, run)
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
