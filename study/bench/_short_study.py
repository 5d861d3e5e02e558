"""What the benches that run a real study share: a study of short trials, and Ray's
fixed cost of starting and stopping apart from any study."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from cluster import ray_session
from study.spec import DatasetSpec, SchedulerSpec, StudySpec

__all__ = ["ray_start_stop", "short_study_spec"]


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
