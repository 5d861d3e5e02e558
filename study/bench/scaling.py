"""Trials per minute and the platform's overhead per trial at 1, 2, 4… trials at a time.

Each concurrency level is a real study through :func:`study.run.run_study` (local Ray,
Tune, Optuna, DeepSpeed, the Parquet store) of short, identical trials, sharing the
machine's CPUs evenly: ``cpus_per_trial`` is Ray's CPUs divided by the concurrency.

What is timed, per level:

- **start-up**: from calling ``run_study`` to its announcing the search (Ray started, the
  cluster checked against the spec). In no window below.
- **search wall**: from that announcement to the driver writing the last trial's last
  epoch (the newest ``history/*.parquet``; a trial's history is rewritten at each report).
- **first trial**: from the announcement to the first trial function starting, as the
  store tells it: the earliest (history written − ``wall_time_s``), a little late (by that
  trial's gaps between epochs). Mostly Tune starting the trial actors' processes.
- **in-trial**: the mean of the rows' ``wall_time_s`` (Tune's ``time_total_s``: the time
  inside the trial function, building data, model and engine, its epochs and the
  checkpoint saved at each).

Over a window W (the search wall, or the **running** window: search wall − first trial,
from the first trial's start to the last epoch written):

- trials per minute = completed trials / W × 60;
- **overhead per trial** = concurrency × W / completed trials − mean in-trial: the time
  a slot spends per trial outside the trial function (scheduling, Optuna's proposals,
  reporting, the driver's Parquet rows, a slot idle while the last trials finish; over
  the search wall also Tune's set-up and starting the trial processes, once per slot and
  shared by the trials it runs).
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from search_spaces import SearchSpace, load_space
from study.bench._short_study import ray_start_stop, short_study_spec, timed_study
from study.spec import DatasetSpec, StudySpec

__all__ = ["format_table", "measure_scaling", "study_name"]

_TASKS = ("semseg", "depth")
_METHOD = "ew"  # one method: every trial does the same work, whatever Optuna proposes
_DATASET = DatasetSpec(image_size=32, train_samples=32, val_samples=16)
_BATCH_SIZE = 16


def study_name(concurrency: int) -> str:
    """The study (folder under the results root) of one concurrency level."""
    return f"bench-scaling-c{concurrency}"


def _check(trials: int, concurrency: Sequence[int], epochs: int, results: Path | None) -> None:
    """Every bad argument before Ray starts, as a ValueError of one line."""
    if trials < 1 or epochs < 1:
        raise ValueError(f"expected trials >= 1 and epochs >= 1, got {trials} and {epochs}")
    if not concurrency:
        raise ValueError("expected at least one concurrency level")
    for level in concurrency:
        if level < 1:
            raise ValueError(f"expected concurrency levels >= 1, got {level}")
        if level > trials:
            raise ValueError(
                f"concurrency {level} exceeds {trials} trials; a slot would never run one"
            )
    if len(set(concurrency)) != len(concurrency):
        raise ValueError(f"a concurrency level is listed twice: {list(concurrency)}")
    if results is not None and results.exists():
        if not results.is_dir():
            raise ValueError(f"{results}: not a folder")
        if any(results.iterdir()):
            raise ValueError(f"{results}: not empty; the bench writes fresh studies there")


def _space() -> SearchSpace:
    # Only the optimiser's knobs are searched: method and head width stay fixed.
    space = load_space("default").restricted_to([_METHOD])
    return space.model_copy(update={"model": {}})


def _level(root: Path, concurrency: int, cpus: float, trials: int, epochs: int) -> dict[str, Any]:
    spec: StudySpec = short_study_spec(
        study_name(concurrency),
        str(root),
        tasks=_TASKS,
        dataset=_DATASET,
        trials=trials,
        epochs=epochs,
        concurrency=concurrency,
        cpus_per_trial=cpus / concurrency,
        methods=[_METHOD],
        batch_size=_BATCH_SIZE,
    )
    figures = timed_study(spec, _space())
    return {
        "concurrency": concurrency,
        "cpus_per_trial": spec.cpus_per_trial,
        "threads_per_trial": max(1, int(spec.cpus_per_trial)),  # as the trial sets them
        **figures,
    }


def measure_scaling(
    trials: int = 8,
    concurrency: Sequence[int] = (1, 2, 4),
    epochs: int = 2,
    results: Path | None = None,
) -> dict[str, Any]:
    """One study per concurrency level, in order, each of ``trials`` trials of ``epochs``
    epochs; the studies are written under ``results`` (empty or absent) or a temporary
    folder."""
    _check(trials, concurrency, epochs, results)
    started = datetime.now().astimezone()
    load_before = os.getloadavg()[0]  # other work on the machine slows every figure
    ray_s, cpus = ray_start_stop()
    if cpus <= 0:
        raise RuntimeError("the local Ray reports no CPU")
    with tempfile.TemporaryDirectory(prefix="mtlstudy-bench-scaling-") as scratch:
        root = Path(scratch) if results is None else Path(results)
        levels = [_level(root, level, cpus, trials, epochs) for level in concurrency]
    levels_flag = " ".join(str(level) for level in concurrency)
    return {
        "command": f"mtlstudy bench scaling --trials {trials} --concurrency {levels_flag} "
        f"--epochs {epochs}",
        "date": started.isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "ray_cpus": cpus,
        },
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
        "trial": {
            "architecture": "hard_sharing",
            "backbone": "regnetx_002",
            "method": _METHOD,
            "tasks": list(_TASKS),
            "image_size": _DATASET.image_size,
            "train_samples": _DATASET.train_samples,
            "val_samples": _DATASET.val_samples,
            "batch_size": _BATCH_SIZE,
            "epochs": epochs,
            "scheduler": "fifo",
        },
        "ray_start_stop_s": ray_s,
        "levels": levels,
    }


#: The table's columns: header, width, format, figure of a level.
_COLUMNS: tuple[tuple[str, int, str, str], ...] = (
    ("concurrency", 11, "d", "concurrency"),
    ("cpus/trial", 11, ".2g", "cpus_per_trial"),
    ("threads", 8, "d", "threads_per_trial"),
    ("trials", 7, "s", "trials"),
    ("start-up s", 11, ".1f", "startup_s"),
    ("search s", 9, ".1f", "search_wall_s"),
    ("1st trial s", 12, ".1f", "first_trial_s"),
    ("in-trial s", 11, ".2f", "in_trial_s"),
    ("trials/min", 11, ".1f", "trials_per_min"),
    ("overhead s", 11, ".2f", "overhead_s_per_trial"),
    ("running: trials/min", 20, ".1f", "running_trials_per_min"),
    ("overhead s", 11, ".2f", "running_overhead_s_per_trial"),
    ("load", 6, ".1f", "load_average"),
)


def format_table(figures: dict[str, Any]) -> str:
    """The run, the machine, one row per concurrency level, and what the columns mean."""
    machine, load, trial = figures["machine"], figures["load_average"], figures["trial"]
    lines = [
        figures["command"],
        f"{figures['date']} · {machine['node']} ({machine['processor']}), "
        f"{machine['cpus']} CPUs, Ray sees {machine['ray_cpus']:g}; "
        f"load average {load['before']:.1f} before, {load['after']:.1f} after",
        f"trials: {trial['architecture']} ({trial['backbone']}), {trial['method']}, "
        f"{'+'.join(trial['tasks'])}, {trial['train_samples']} train + {trial['val_samples']} "
        f"val images at {trial['image_size']} px, batch {trial['batch_size']}, "
        f"{trial['epochs']} epoch(s), {trial['scheduler']}, no baselines; "
        f"Ray start+stop alone {figures['ray_start_stop_s']:.1f} s",
        "".join(f"{header:>{width}s}" for header, width, _, _ in _COLUMNS),
    ]
    for level in figures["levels"]:
        cells = {**level, "trials": f"{level['completed']}/{level['trials']}"}
        lines.append("".join(f"{cells[key]:>{width}{kind}}" for _, width, kind, key in _COLUMNS))
    lines += [
        "start-up: run_study called → search announced (Ray up, the cluster checked); "
        "in neither window",
        "search: search announced → the driver writes the last trial's last epoch",
        "1st trial: search announced → the first trial function starts (earliest history "
        "written − its wall_time_s); mostly starting the trial processes",
        "in-trial: mean wall_time_s of the rows (inside the trial function: build, epochs, "
        "checkpoints)",
        "trials/min = completed trials / W × 60; overhead s (per trial) = concurrency × W / "
        "completed trials − in-trial; W = search, or for running: search − 1st trial",
        "load: the 1-minute load average as the level started",
    ]
    return "\n".join(lines)
