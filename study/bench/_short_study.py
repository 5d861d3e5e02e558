"""What the benches that run a real study share: a study of short trials, and Ray's
fixed cost of starting and stopping apart from any study."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

from cluster import ray_session
from search_spaces import SearchSpace
from study.run import run_study
from study.spec import DatasetSpec, SchedulerSpec, StudySpec
from study.store import load_trials, result_files

__all__ = ["ray_start_stop", "short_study_spec", "timed_study"]


def short_study_spec(
    name: str,
    results: str,
    *,
    tasks: Sequence[str],
    dataset: DatasetSpec,
    trials: int,
    epochs: int,
    concurrency: int,
    cpus_per_trial: float,
    **fields: Any,
) -> StudySpec:
    """Short trials of ``hard_sharing`` (regnetx_002) on synthetic scenes. FIFO runs every
    trial to its last epoch and ``baselines: none`` skips the single-task phase, so the
    study's trials are all alike and all of them are the search's."""
    return StudySpec(
        name=name,
        tasks=list(tasks),
        dataset=dataset,
        model={"backbone": "regnetx_002"},
        trials=trials,
        epochs=epochs,
        concurrency=concurrency,
        cpus_per_trial=cpus_per_trial,
        scheduler=SchedulerSpec(name="fifo"),
        baselines="none",
        results=results,
        **fields,
    )


def ray_start_stop() -> tuple[float, float]:
    """Seconds to start and stop a local Ray with nothing to run, and the CPUs it saw."""
    import ray

    started = time.perf_counter()
    with ray_session():
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
    return time.perf_counter() - started, cpus


def timed_study(spec: StudySpec, space: SearchSpace) -> dict[str, Any]:
    """Run ``spec`` and time its windows, as the store tells them: start-up (Ray's start),
    the search, the first trial's start, the mean time inside a trial, and the
    overhead per trial over the search and over the running window (after the first
    trial started); see :mod:`study.bench.scaling`."""
    announced: list[float] = []

    def log(line: str) -> None:
        if line.startswith("searching"):
            announced.append(time.time())

    # Each trial's own history file tells when it ended: no compaction into one file.
    spec = spec.model_copy(update={"compact_on_finish": False})
    load = os.getloadavg()[0]  # the machine is shared: a level's figures need its load
    called = time.time()
    outcome = run_study(spec, space, log=log)
    returned = time.time()
    if not announced:
        raise RuntimeError("run_study never announced its search; the bench cannot time it")
    # A trial's history is rewritten at each report: the file's time is its last epoch's
    # end. (Trial rows are no clock: flagging the Pareto front rewrites some at the end.)
    written = {p.stem: p.stat().st_mtime for p in result_files(outcome.results, "history")}
    ended = max(written.values())
    rows = load_trials(outcome.results)
    completed = rows[rows["status"] == "completed"]
    if completed.empty:
        raise RuntimeError(f"no trial completed; see: mtlstudy query {outcome.results}")
    wall = ended - announced[0]
    first_start = min(
        written[trial] - float(s)
        for trial, s in zip(completed["trial_id"], completed["wall_time_s"], strict=True)
    )
    in_trial = statistics.fmean(float(s) for s in completed["wall_time_s"])
    running = ended - first_start
    done, concurrency = len(completed), spec.concurrency
    return {
        "trials": len(rows),
        "completed": done,
        "errors": outcome.errors,
        "load_average": load,
        "startup_s": announced[0] - called,
        "search_wall_s": wall,
        "first_trial_s": first_start - announced[0],
        "teardown_s": returned - ended,
        "running_s": running,
        "in_trial_s": in_trial,
        "trials_per_min": done / wall * 60,
        "overhead_s_per_trial": concurrency * wall / done - in_trial,
        "running_trials_per_min": done / running * 60,
        "running_overhead_s_per_trial": concurrency * running / done - in_trial,
    }
