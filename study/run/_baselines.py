"""Single-task baselines from the results store: Δm's references and AMTL's potentials.

A baseline of a task is a completed single-task trial of the same dataset (the same
data: :attr:`StudySpec.dataset_key`), architecture and ``baseline_model`` arguments, scored
under the same protocol (:attr:`StudySpec.metrics_key`), from any study under the same
results root; the best one by the task's headline metric is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from models import get_task
from study.errors import UserError
from study.spec import StudySpec
from study.store import load_trials

__all__ = ["Baselines", "find_baselines", "single_task_trials"]


@dataclass(frozen=True)
class Baselines:
    """Per task: the baseline trial's id and its final metrics."""

    trials: dict[str, str]
    metrics: dict[str, dict[str, float]]

    def missing(self, tasks: list[str]) -> list[str]:
        return [t for t in tasks if t not in self.trials]


def single_task_trials(root: Path, spec: StudySpec, task: str) -> pd.DataFrame:
    """Completed single-task trials of ``task`` on this spec's data and architecture, with
    the spec's ``baseline_model`` arguments."""
    try:
        trials = load_trials(root, where="kind == 'single_task' and status == 'completed'")
    except FileNotFoundError:
        return pd.DataFrame()
    if "dataset_key" not in trials:
        return trials.iloc[0:0]
    alone = trials["tasks"].map(lambda names: list(names) == [task])
    same = (trials["dataset_key"] == spec.dataset_key) & (
        trials["architecture"] == spec.architecture
    )
    for name, value in spec.baseline_model.items():
        column = f"hp.model.{name}"
        same &= trials[column] == value if column in trials else False
    # Scored under the same protocol: rows from before it was recorded count as scored
    # without options, so an edges or detection baseline from then is never used.
    wanted = spec.metrics.for_dataset(spec.dataset).task_protocol(task)
    keys = trials["metrics_key"] if "metrics_key" in trials else pd.Series("", trials.index)
    same &= keys.map(lambda key: _protocol(key, task) == wanted)
    return trials[alone & same]


def _protocol(metrics_key: object, task: str) -> str:
    """``task``'s protocol in a row's ``metrics_key`` ("" where it has none)."""
    if not isinstance(metrics_key, str):
        return ""
    entries = (entry.partition("=") for entry in metrics_key.split(";") if entry)
    return next((protocol for name, _, protocol in entries if name == task), "")


def find_baselines(root: Path, spec: StudySpec) -> Baselines:
    """The best stored baseline of each of the spec's tasks that has one."""
    found = Baselines(trials={}, metrics={})
    for task in spec.tasks:
        record = get_task(task, spec.dataset.num_classes)
        rows = single_task_trials(root, spec, task)
        headline = f"final.{task}.{record.headline}"
        if rows.empty or headline not in rows:
            continue
        rows = rows[rows[headline].map(lambda v: isinstance(v, float) and math.isfinite(v))]
        if rows.empty:
            continue
        better = record.metric(record.headline).higher_is_better
        best = rows.loc[rows[headline].idxmax() if better else rows[headline].idxmin()]
        values = {
            m.name: float(best.get(f"final.{task}.{m.name}", math.nan)) for m in record.metrics
        }
        # A relative change against 0 (an untrained baseline's δ1, say) is undefined.
        usable = {m: v for m, v in values.items() if math.isfinite(v) and v != 0}
        if not usable:
            raise UserError(
                f"the single-task baseline {best['trial_id']} of {task!r} has no non-zero "
                f"metric {values}; train it longer (epochs, train_samples)"
            )
        found.trials[task] = str(best["trial_id"])
        found.metrics[task] = usable
    return found
