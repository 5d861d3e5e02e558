"""A Tune callback, in the driver, that turns each trial's reports into Parquet rows."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from models import Task
from study import store
from study.run._setup import TrialSetup
from study.spec import feasible
from study.store import (
    TrialRow,
    TrialStatus,
    read_trial_history,
    read_trial_row,
    write_history,
    write_trial,
)

__all__ = ["StoreRecorder", "history_rows", "trained_with"]

#: Config keys that say which trial this is, not how it trains.
_NOT_HYPERPARAMETERS = ("task", "repeat", "config_id", "architecture")


def _versions() -> dict[str, str]:
    found = {}
    for name in store.VERSIONED_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


#: The per-task report keys a history row stands for, by (split, metric); every other
#: per-task row is a validation metric, ``<task>/<metric>``.
_REPORT_KEYS = {
    ("train", "loss"): "train_loss/{task}",
    ("train", "weight"): "weight/{task}",
    ("val", "loss"): "val_loss/{task}",
    ("train", "labels"): "labels/{task}",
    ("train", "achievement"): "achievement/{task}",
    ("val", "forgetting"): "forgetting/{task}",
}


#: Whole-model training rows of fp16 trials: the epoch's skipped steps, its last loss scale.
_FP16_KEYS = ("skipped_steps", "loss_scale")


def history_rows(result: Mapping[str, Any], tasks: Mapping[str, Task]) -> list[dict[str, Any]]:
    """Tidy rows (epoch, split, task, metric, value) of one epoch's report."""
    epoch = int(result["epoch"])
    rows = [("val", "all", "loss", result["val_loss"])]
    if "delta_m" in result:
        rows.append(("val", "all", "delta_m", result["delta_m"]))
    rows += [("train", "all", key, result[key]) for key in _FP16_KEYS if key in result]
    for name, task in _reported(result, tasks).items():
        for (split, metric), key in _REPORT_KEYS.items():
            if key.format(task=name) in result:
                rows.append((split, name, metric, result[key.format(task=name)]))
        rows += [("val", name, m.name, result[f"{name}/{m.name}"]) for m in task.metrics]
    return [
        {"epoch": epoch, "split": s, "task": t, "metric": m, "value": float(v)}
        for s, t, m, v in rows
    ]


def _reported(result: Mapping[str, Any], tasks: Mapping[str, Task]) -> dict[str, Task]:
    """The tasks a report covers: an incremental trial has not added the later ones yet."""
    return {n: t for n, t in tasks.items() if f"train_loss/{n}" in result}


def _per_task(result: Mapping[str, Any], prefix: str, tasks: Mapping[str, Task]) -> dict[str, Any]:
    return {t: result[f"{prefix}/{t}"] for t in tasks if f"{prefix}/{t}" in result}


def trained_with(setup: TrialSetup, tasks: Mapping[str, Task]) -> dict[str, list[str]]:
    """Per task, the tasks the model had when it was trained."""
    names = list(tasks)
    if setup.incremental:
        return {name: names[: i + 1] for i, name in enumerate(names)}
    return {name: names for name in names}


class StoreRecorder(Callback):
    """Writes ``trials/<id>.parquet`` and ``history/<id>.parquet`` as trials report and end.

    Rows are written from the driver, so trials on any node land in one store.
    """

    def __init__(self, root: Path, setup: TrialSetup, epochs: int) -> None:
        self.root = root
        self._setup = setup
        self.epochs = epochs
        self.versions = _versions()
        self._history: dict[str, dict[int, list[dict[str, Any]]]] = {}
        self._results: dict[str, list[Mapping[str, Any]]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickled into the experiment by the driver that started it: write where this one
        # runs (another machine's mirror of a root at a URI).
        self.__dict__.update(state)
        bound = store.driver_store(self._setup.spec.name)
        if bound is not None:
            self.root = bound.root

    def _tasks(self, trial: Trial) -> dict[str, Task]:
        return self._setup.task_records(trial.config)

    def _resume(self, trial: Trial) -> None:
        """A trial first seen here may have reported to a driver that was killed: its
        stored epochs are kept, and count towards its best metrics."""
        if trial.trial_id in self._history:
            return
        stored = read_trial_history(self.root, self._setup.spec.name, trial.trial_id)
        by_epoch: dict[int, list[dict[str, Any]]] = {}
        for row in stored:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
        self._history[trial.trial_id] = by_epoch
        self._results[trial.trial_id] = [_report(e, rows) for e, rows in sorted(by_epoch.items())]

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any
    ) -> None:
        self._resume(trial)
        tasks = self._tasks(trial)
        epoch = int(result["epoch"])
        # A retried trial reports its epochs again; the last report of an epoch wins.
        self._history.setdefault(trial.trial_id, {})[epoch] = history_rows(result, tasks)
        results = [r for r in self._results.get(trial.trial_id, []) if r["epoch"] < epoch]
        self._results[trial.trial_id] = [*results, dict(result)]
        rows = [
            {"trial_id": trial.trial_id, **row}
            for epoch_rows in self._history[trial.trial_id].values()
            for row in epoch_rows
        ]
        write_history(self.root, self._setup.spec.name, trial.trial_id, rows)
        self._write_row(trial, "running", None)

    def on_trial_complete(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._resume(trial)
        done = self._results.get(trial.trial_id, [])
        finished = bool(done) and int(done[-1]["epoch"]) >= self.epochs
        self._write_row(trial, "completed" if finished else "stopped_early", None)

    def on_trial_error(
        self, iteration: int, trials: list[Trial], trial: Trial, **info: Any
    ) -> None:
        self._resume(trial)
        self._write_row(trial, "error", _error_line(trial))

    def _write_row(self, trial: Trial, status: TrialStatus, error: str | None) -> None:
        spec = self._setup.spec
        config = {k: v for k, v in trial.config.items() if k not in _NOT_HYPERPARAMETERS}
        results = self._results.get(trial.trial_id, [])
        tasks = self._tasks(trial)
        row: TrialRow = {
            "trial_id": trial.trial_id,
            "status": status,
            "error": error,
            "kind": self._setup.kind,
            "architecture": self._setup.model_for(trial.config)[0],
            "method": config.get("method", "ew"),
            "dataset": spec.dataset.name,
            "dataset_key": spec.dataset_key,
            "metrics_key": spec.metrics_key,
            "tasks": list(tasks),
            "seed": self._setup.seed_for(trial.config),
            "repeat": int(trial.config.get("repeat", 0)),
            "config_id": trial.config.get("config_id", trial.trial_id),
            "hp": config,
            "incremental": self._setup.incremental,
            "stage": None if self._setup.stage is None else self._setup.stage.name,
            "trained_with": trained_with(self._setup, tasks),
            "epochs": int(results[-1]["epoch"]) if results else 0,
            "versions": self.versions,
        }
        if results and "gflops" not in results[-1]:
            # Resumed with no new report: the stored row keeps what only reports carry.
            stored = read_trial_row(self.root, spec.name, trial.trial_id) or {}
            row["epochs"] = int(results[-1]["epoch"])
            kept = {k: v for k, v in stored.items() if k.split(".")[0] not in row}
            write_trial(self.root, spec.name, {**kept, **row})
            store.push_driver(spec.name)
            return
        if results:
            last = results[-1]
            row |= {
                "final": _metrics(last, _reported(last, tasks)),
                "labels": _per_task(last, "labels", tasks),
                "best": _best_metrics(results, tasks),
                "task_gflops": _per_task(last, "gflops", tasks),
                "task_params_trainable": _per_task(last, "params_trainable", tasks),
                "task_params_stored": _per_task(last, "params_stored", tasks),
                "forgetting": _per_task(last, "forgetting", tasks),
                "compute": {
                    k.removeprefix("compute/").replace("/", "."): v
                    for k, v in last.items()
                    if k.startswith("compute/")
                },
                "val_loss": last["val_loss"],
                "gflops": last["gflops"],
                "gflops_ratio": last["gflops_ratio"],
                "gflops_single_task_sum": last["gflops_single_task_sum"],
                "params": last["params"],
                "wall_time_s": last.get("time_total_s"),
                "restored_from_epoch": last["restored_from_epoch"],
                "node": last["node"],
            }
            if self._setup.kind == "multi_task":
                row["feasible"] = feasible(spec.constraints, last)
            if "delta_m" in last:
                row["delta_m"] = last["delta_m"]
                row["baseline_trials"] = dict(self._setup.baseline_trials or {})
                # An incremental trial's early Δm covers fewer tasks; only whole ones count.
                whole = [r for r in results if len(_reported(r, tasks)) == len(tasks)]
                row["best_delta_m"] = max(r["delta_m"] for r in whole or results)
        if self._setup.models_dir is not None:
            model = store.join(self._setup.models_dir, f"{trial.trial_id}.pt")
            row["model_path"] = model if store.exists(model) else None
        write_trial(self.root, spec.name, row)
        store.push_driver(spec.name)


def _report(epoch: int, rows: list[Mapping[str, Any]]) -> dict[str, Any]:
    """An epoch's report as far as its history rows tell it (inverse of history_rows)."""
    report: dict[str, Any] = {"epoch": epoch}
    for row in rows:
        split, task, metric = row["split"], row["task"], row["metric"]
        if task == "all":
            report["val_loss" if metric == "loss" else metric] = row["value"]
        else:
            key = _REPORT_KEYS.get((split, metric), "{task}/" + metric)
            report[key.format(task=task)] = row["value"]
    return report


def _metrics(result: Mapping[str, Any], tasks: Mapping[str, Task]) -> dict[str, dict[str, float]]:
    return {
        n: {m.name: float(result[f"{n}/{m.name}"]) for m in t.metrics} for n, t in tasks.items()
    }


def _best_metrics(
    results: list[Mapping[str, Any]], tasks: Mapping[str, Task]
) -> dict[str, dict[str, float]]:
    best: dict[str, dict[str, float]] = {}
    for name, task in tasks.items():
        reported = [r for r in results if f"train_loss/{name}" in r]
        if not reported:
            continue
        best[name] = {}
        for metric in task.metrics:
            values = [float(r[f"{name}/{metric.name}"]) for r in reported]
            best[name][metric.name] = max(values) if metric.higher_is_better else min(values)
    return best


def _error_line(trial: Trial) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1][:500]
    return "trial failed"
