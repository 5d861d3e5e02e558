"""The leaderboard as multi-task papers print it, as data: one row per group (method ×
architecture by default) of each data setting, the single-task baselines first, every
task metric as its mean and spread over seeds, Δm last.

Which trials a row averages (one per seed):

- When configurations were repeated (``config_id`` with two or more seeds), the group's
  best configuration by mean Δm, over its seeds.
- Otherwise, per seed, the group's best completed trial by Δm (the result of that
  seed's search, as the heatmap takes it), over the seeds.

Without Δm the first task's headline metric chooses. :mod:`study.analysis._paper_render`
writes the frame as text, LaTeX, Markdown or CSV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.task_metrics import task_metrics
from study.analysis._data import PlotDataError, multi_task_trials
from study.analysis._labels import PAPER_METRICS, TASK_NAMES, metric_label
from study.analysis._tables import metric_columns, unique

__all__ = ["SEED_SUMMARIES", "TableColumn", "delta_m_definition", "delta_m_line", "paper_table"]

#: ``--seeds``: what a cell shows of the values over seeds.
SEED_SUMMARIES: tuple[str, ...] = ("mean±std", "mean±sem", "mean")
_ASCII = {"mean+-std": "mean±std", "mean+-sem": "mean±sem"}
#: The single-task row's label in the first group column.
REFERENCE = "single-task"


@dataclass(frozen=True)
class TableColumn:
    """One value column: the trial column it summarises, its task ("" for Δm and cost),
    its label without the task, its direction (None: no best is marked) and whether
    papers report it (the narrow terminal table shows those)."""

    key: str
    task: str
    label: str
    higher: bool | None
    paper: bool

    @property
    def task_name(self) -> str:
        return TASK_NAMES.get(self.task, self.task)


def _seed_summary(seeds: str) -> str:
    seeds = _ASCII.get(seeds, seeds)
    if seeds not in SEED_SUMMARIES:
        raise ValueError(f"--seeds: unknown {seeds!r}; expected one of {', '.join(SEED_SUMMARIES)}")
    return seeds


def _columns(rows: pd.DataFrame) -> list[TableColumn]:
    """Every task metric the rows have (tasks in order, headline first), then GFLOPs and
    Δm. Papers' metrics come first within each task."""
    found = []
    for task, key, higher in metric_columns(rows, unique(rows, "tasks")):
        metric = key.split(".")[2]
        paper = metric in PAPER_METRICS.get(task, (task_metrics(task).headline,))
        label = metric_label(task, metric, arrow=True, with_task=False)
        found.append(TableColumn(key, task, label, higher, paper))
    found.sort(key=lambda c: (unique(rows, "tasks").index(c.task), not c.paper))
    if "gflops" in rows and rows["gflops"].notna().any():
        found.append(TableColumn("gflops", "", "GFLOPs ↓", False, False))
    if "delta_m" in rows and rows["delta_m"].notna().any():
        found.append(TableColumn("delta_m", "", "Δm (%) ↑", True, True))
    return found


def _choose(rows: pd.DataFrame, columns: Sequence[TableColumn]) -> pd.DataFrame:
    """The trials a group's row averages, one per seed (see the module's docstring)."""
    by = next((c for c in columns if c.key == "delta_m"), None) or next(
        (c for c in columns if c.task), None
    )
    if by is None or rows[by.key].isna().all():
        return rows.drop_duplicates("seed")
    rows = rows.dropna(subset=[by.key])
    sign = 1.0 if by.higher else -1.0
    if "config_id" in rows and rows.groupby("config_id")["seed"].nunique().max() >= 2:
        score = rows.groupby("config_id")[by.key].mean() * sign
        return rows[rows["config_id"] == score.idxmax()]
    best = (rows[by.key] * sign).groupby(rows["seed"].fillna(-1)).idxmax()
    return rows.loc[best.to_numpy()]


def _summarise(values: pd.Series, seeds: str) -> tuple[float, float]:
    values = values.dropna().astype(float)
    if values.empty:
        return math.nan, math.nan
    mean = float(values.mean())
    if seeds == "mean" or len(values) < 2:
        return mean, math.nan
    std = float(values.std(ddof=1))
    return mean, std / math.sqrt(len(values)) if seeds == "mean±sem" else std


def _reference_row(
    trials: pd.DataFrame, chosen: pd.DataFrame, columns: Sequence[TableColumn], seeds: str
) -> dict[str, object] | None:
    """The single-task baselines the chosen trials' Δm was measured against: per task,
    the baseline trials they name (``baseline_trials.<task>``), over those trials."""
    row: dict[str, object] = {"seeds": 0}
    gflops = []
    for task in dict.fromkeys(c.task for c in columns if c.task):
        named = f"baseline_trials.{task}"
        if named not in chosen:
            continue
        ids = set(chosen[named].dropna().astype(str))
        baselines = trials[trials["trial_id"].astype(str).isin(ids)]
        if baselines.empty:
            continue
        row["seeds"] = max(int(row["seeds"]), len(baselines))
        for column in (c for c in columns if c.task == task):
            row[column.key], row[f"{column.key}_spread"] = _summarise(
                baselines[column.key] if column.key in baselines else pd.Series(), seeds
            )
        if "gflops" in baselines:
            gflops.append(float(baselines["gflops"].astype(float).mean()))
    if not row["seeds"]:
        return None
    row["gflops"] = sum(gflops) if gflops else math.nan
    row["delta_m"] = 0.0  # by definition: the baselines against themselves
    return row


def paper_table(
    trials: pd.DataFrame,
    group_by: Sequence[str] = ("method", "architecture"),
    seeds: str = "mean±std",
) -> pd.DataFrame:
    """One row per data setting (``data_key``) × group: ``data_key``, the ``group_by``
    columns, ``seeds`` (how many repeats the row averages), ``reference`` (True for the
    single-task row, first in each setting), and per value column its mean (the column's
    own name) and ``<name>_spread`` (the std, the standard error, or NaN, per ``seeds``).
    Groups are ordered best Δm first. ``attrs["columns"]`` holds the
    :class:`TableColumn` list of each data setting (``attrs["columns"][data_key]``)."""
    seeds = _seed_summary(seeds)
    group_by = list(group_by)
    if not group_by:
        raise ValueError("--group-by: expected at least one column, such as method")
    done = multi_task_trials(trials)
    if done.empty:
        raise PlotDataError("table: no completed multi-task trial")
    missing = [c for c in group_by if c not in done]
    if missing:
        raise ValueError(
            f"--group-by: no column {', '.join(map(repr, missing))} in the trials; expected "
            "columns such as method, architecture, dataset (see docs/RESULTS.md)"
        )
    out, layout = [], {}
    for dataset, rows in done.groupby("data_key", sort=True):
        columns = _columns(rows)
        layout[dataset] = columns
        body, chosen_all = [], []
        for key, group in rows.groupby(group_by, sort=False, dropna=False):
            chosen = _choose(group, columns)
            chosen_all.append(chosen)
            keys = key if isinstance(key, tuple) else (key,)
            row: dict[str, object] = {"data_key": dataset, "reference": False}
            row |= {c: ("-" if pd.isna(v) else str(v)) for c, v in zip(group_by, keys, strict=True)}
            row["seeds"] = len(chosen)
            for column in columns:
                row[column.key], row[f"{column.key}_spread"] = _summarise(chosen[column.key], seeds)
            body.append(row)
        body.sort(key=lambda r: -_finite(r.get("delta_m")))
        reference = _reference_row(trials, pd.concat(chosen_all), columns, seeds)
        if reference is not None:
            labels = {c: "" for c in group_by} | {group_by[0]: REFERENCE}
            body.insert(0, {"data_key": dataset, "reference": True, **labels, **reference})
        out.extend(body)
    values = [
        k
        for c in dict.fromkeys(c for cs in layout.values() for c in cs)
        for k in (c.key, f"{c.key}_spread")
    ]
    frame = pd.DataFrame(out, columns=["data_key", "reference", *group_by, "seeds", *values])
    frame.attrs = {"columns": layout, "group_by": group_by, "seeds": seeds}
    return frame


def _finite(value: object) -> float:
    number = float(value) if value is not None else math.nan
    return number if np.isfinite(number) else -math.inf


def delta_m_line(table: pd.DataFrame, dataset: str) -> str:
    """One line that defines Δm where it is shown: its formula, its sign and the
    single-task baselines' values (headline metrics) it is measured against."""
    columns = table.attrs["columns"][dataset]
    rows = table[(table["data_key"] == dataset) & table["reference"]]
    if rows.empty:
        return delta_m_definition({})
    reference = rows.iloc[0]
    return delta_m_definition(
        {
            f"{c.task} {c.label.removesuffix(' ↑').removesuffix(' ↓')}": reference[c.key]
            for c in columns
            if c.task and c.key.split(".")[2] == task_metrics(c.task).headline
        }
    )


def delta_m_definition(baselines: dict[str, float]) -> str:
    """Δm's formula and sign in one line, with the baselines' ``{label: value}``."""
    text = "Δm (%) = 100/T·Σ_t ±(M_t−B_t)/B_t, + if higher is better; > 0 beats single-task B"
    if not baselines:
        return text + " (none in these results)"
    return text + ": " + ", ".join(f"{k} {v:.3g}" for k, v in baselines.items())
