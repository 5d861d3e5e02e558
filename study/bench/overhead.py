"""The platform's overhead: a study of N short trials against the same training in a loop."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models import balancing
from search_spaces import load_space
from study.bench._short_study import ray_start_stop, short_study_spec, timed_study
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec
from study.store import load_trials

__all__ = ["measure_overhead"]


def _nested(hp: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, value in hp.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        *groups, name = key.split(".")
        node = config
        for group in groups:
            node = node.setdefault(group, {})
        node[name] = value
    return config


def measure_overhead(trials: int = 8, epochs: int = 2) -> dict[str, Any]:
    """Wall times of the study and of a plain loop replaying the study's own configurations."""
    with tempfile.TemporaryDirectory() as results:
        spec = short_study_spec(
            "bench-overhead",
            results,
            tasks=["semseg", "depth", "normals", "edges"],
            dataset=DatasetSpec(train_samples=128, val_samples=32),
            trials=trials,
            epochs=epochs,
            concurrency=1,
            cpus_per_trial=1,
        )
        space = load_space("default")
        # No single-task phase here, so no potentials for the achievement-based methods.
        space = space.restricted_to(
            [m for m in space.methods if "potentials" not in balancing.defaults(m)]
        )
        fixed_s, _ = ray_start_stop()
        started = time.perf_counter()
        windows = timed_study(spec, space)
        study_s = time.perf_counter() - started

        rows = load_trials(Path(results) / spec.name)
        hp_columns = [c for c in rows.columns if c.startswith("hp.")]
        configs = [
            _nested({c.removeprefix("hp."): row[c] for c in hp_columns})
            for _, row in rows.iterrows()
        ]
        torch.set_num_threads(1)
        setup = TrialSetup(spec=spec, tasks=tuple(spec.tasks))
        started = time.perf_counter()
        for config in configs:
            runner = TrialRunner(setup, config)
            for _ in range(epochs):
                runner.run_epoch()
        loop_s = time.perf_counter() - started
    return {
        "trials": len(configs),
        "epochs": epochs,
        "study_wall_s": round(study_s, 2),
        "plain_loop_wall_s": round(loop_s, 2),
        "overhead_ratio": round(study_s / loop_s, 3),
        "overhead_s_per_trial": round((study_s - loop_s) / max(1, len(configs)), 3),
        "ray_start_stop_s": round(fixed_s, 2),
        "overhead_s_per_trial_after_start": round(
            (study_s - fixed_s - loop_s) / max(1, len(configs)), 3
        ),
        # Where the study's extra time goes, from the store (see bench scaling).
        "startup_s": round(windows["startup_s"], 2),
        "first_trial_s": round(windows["first_trial_s"], 2),
        "in_trial_s": round(windows["in_trial_s"], 3),
        "plain_trial_s": round(loop_s / max(1, len(configs)), 3),
        "running_overhead_s_per_trial": round(windows["running_overhead_s_per_trial"], 3),
        "note": "1 trial at a time, 1 thread; the study wall includes starting and stopping "
        "Ray; start-up is run_study to the search's start (Ray's start, the cluster check), "
        "first_trial the search's start to the first trial function's (the trial "
        "process's imports), in_trial the mean time inside a trial function against "
        "plain_trial in the loop, running overhead the time per trial outside the trial "
        "function once trials run",
    }
