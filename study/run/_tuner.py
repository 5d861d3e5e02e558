"""A study on Ray Tune, phase after phase: the spec written, baselines found or trained,
then the search (or the stages), each a Tune experiment of :mod:`study.run._phases`."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import optuna
import yaml

from cluster import ray_session
from search_spaces import SearchSpace
from study import store
from study.errors import UserError
from study.run._baselines import find_baselines
from study.run._engine import CPU_FALLBACK
from study.run._op_cache import torch_extensions_dir
from study.run._phases import (
    RunOptions,
    baselines_phase,
    check_gpus,
    search_phase,
    stages_phase,
)
from study.run._potentials import resolve_potentials
from study.run._search import search_storage
from study.run._signals import graceful_stop
from study.spec import StudySpec, storage_kind
from study.store import write_spec

__all__ = ["StudyOutcome", "run_study"]


class StudyOutcome(NamedTuple):
    """What a study leaves: where its results are, and how many of its trials failed."""

    #: The study's folder on this machine (a root at a URI: its local mirror).
    results: Path
    trials: int
    errors: int
    #: Where the study's results live: ``results``, or its folder at the root's URI.
    location: str = ""


def _check_cluster(spec: StudySpec) -> None:
    """Refuse, before any trial starts, a spec whose GPUs the cluster cannot give."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    check_gpus(spec, ray.cluster_resources(), nodes)


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
    allow_fresh: bool = False,
) -> StudyOutcome:
    """Run the whole study and return where its results are; with ``resume``, continue
    the experiments a killed driver left under the study's folder (refused when there are
    none, unless ``allow_fresh``). ``progress`` gets a line on each change of a phase's
    trials; ``verbose`` shows Tune's own table. SIGINT or SIGTERM stops it gracefully and
    raises :class:`StudyInterrupted`."""
    remote = None
    if store.is_uri(spec.results):
        remote = store.RemoteRoot.open(spec.results, study=spec.name)
    # A root at a URI: the driver works on a local mirror and pushes it as it writes.
    root = remote.pull() if remote is not None else Path(spec.results).resolve()
    # Trial processes run in folders of their own: they get the root as an absolute path.
    spec = spec.model_copy(update={"results": remote.uri if remote else str(root)})
    sync = None if remote is None else functools.partial(remote.push, spec.name)
    store.bind_driver(spec.name, store.DriverStore(root, sync))
    run = RunOptions(resume=resume, progress=progress, verbose=verbose)
    started = store.holds_files(store.join(spec.results, spec.name, "tune"))
    if resume and not allow_fresh and not started:
        raise UserError(
            f"nothing to resume: {store.join(spec.results, spec.name)} holds no started study; "
            "run without --resume, or add --allow-fresh to start it when there is none"
        )
    if resume:  # nothing writes to the study yet: whatever killed writers left goes
        store.remove_leftovers(root / spec.name, everything=True, recursive=True)
    try:
        with graceful_stop():
            outcome = _run_study(spec, space, root, address, run, log)
    finally:
        store.push_driver(spec.name)
    location = store.join(spec.results, spec.name)
    if spec.compact_on_finish:
        # One file per kind instead of one per trial: what every later query reads.
        log(f"compacting {location}")
        store.compact(location if remote is not None else root / spec.name)
    return outcome._replace(location=location)


def _run_study(
    spec: StudySpec,
    space: SearchSpace,
    root: Path,
    address: str | None,
    run: RunOptions,
    log: Callable[[str], None],
) -> StudyOutcome:
    try:  # an unwritable store fails here, before Ray starts
        write_spec(root, spec.name, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        # Every trial file of the study gets these columns, typed nulls included.
        store.write_schema(root, spec.name, store.trial_schema(spec, space))
        store.push_driver(spec.name)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"results: cannot write the study's folder {root / spec.name}: {reason}; "
            "expected a folder you can write to (choose another with --results)"
        ) from None
    if storage_kind(spec.search_storage) != "journal":
        search_storage(root, spec.name, spec.search_storage)  # unreachable: fail before Ray
    env = {
        "TORCH_EXTENSIONS_DIR": str(torch_extensions_dir()),
        # Trials sign their checkpoints, and check them before a resume, with this key.
        store.KEY_ENV: store.study_key(spec.name).hex(),
    }
    if CPU_FALLBACK in os.environ:  # the test switch reaches trials on any cluster
        env[CPU_FALLBACK] = os.environ[CPU_FALLBACK]
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
        _check_cluster(spec)
        if baselines is not None and baselines.missing(spec.tasks):
            missing = baselines.missing(spec.tasks)
            log(f"training single-task baselines of {missing}")
            errors += baselines_phase(spec, space, root, missing, run)
            baselines = find_baselines(root, spec)
            if baselines.missing(spec.tasks):
                raise UserError(
                    f"a single-task baseline trial failed; see: mtlstudy query {root / spec.name}"
                )
        if spec.stages is not None:
            errors += stages_phase(spec, space, root, run, log)
            trials = sum(stage.trials for stage in spec.stages)
            return StudyOutcome(results=root / spec.name, trials=trials, errors=errors)
        potentials = resolve_potentials(root, spec, space)
        repeats = f" × {spec.repeats} seeds" if spec.repeats > 1 else ""
        log(
            f"searching: {spec.trials} multi-task configurations{repeats}, "
            f"{spec.concurrency} at a time"
        )
        errors += search_phase(spec, space, root, baselines, potentials, run)
    return StudyOutcome(results=root / spec.name, trials=spec.trials * spec.repeats, errors=errors)
