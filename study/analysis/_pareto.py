"""Configurations over their repeats, and the Pareto front of a study's objectives.

A configuration is the trials that share a ``config_id`` (one per seed). Its objectives
are their means; it can be on the front when every repeat completed and met the
constraints. :func:`flag_pareto` writes the front into the trials table as ``pareto``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from study.store import load_trials, read_trial_row, write_trial

__all__ = ["configurations", "flag_pareto", "pareto_mask"]

Direction = Literal["min", "max"]


def pareto_mask(values: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Which rows of ``values`` (n × objectives) no other row dominates: at least as good
    in every objective and better in one. Rows with a NaN are never on the front; equal
    rows are on it together. Two objectives take O(n log n); more, O(n²)."""
    values = np.asarray(values, dtype=float).reshape(len(values), len(directions))
    signs = np.array([1.0 if d == "max" else -1.0 for d in directions])
    gains = values * signs  # larger is better in every column
    valid = np.flatnonzero(~np.isnan(gains).any(axis=1))
    mask = np.zeros(len(gains), dtype=bool)
    if len(directions) == 2:
        mask[valid] = _front_of_two(gains[valid])
        return mask
    others = gains[valid]
    for i in valid:
        dominated = ((others >= gains[i]).all(axis=1) & (others > gains[i]).any(axis=1)).any()
        mask[i] = not dominated
    return mask


def _front_of_two(gains: np.ndarray) -> np.ndarray:
    """The front of two larger-is-better columns. Sorted by the first column, best first: a
    point is on it when its second column is its group's best (the group of equal first
    values) and beats every group before it."""
    if len(gains) == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((-gains[:, 1], -gains[:, 0]))
    first, second = gains[order, 0], gains[order, 1]
    starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])
    tops = second[starts]  # each group's best, as the sort puts it first
    best_before = np.r_[-np.inf, np.maximum.accumulate(tops)[:-1]]
    group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(order)]))
    front = np.zeros(len(gains), dtype=bool)
    front[order] = (tops > best_before)[group] & (second == tops[group])
    return front


def configurations(
    trials: pd.DataFrame, metrics: Sequence[str], repeats: int | None = None
) -> pd.DataFrame:
    """One row per ``config_id`` of the multi-task trials: ``method``, ``architecture``,
    ``<metric>_mean``, ``<metric>_std`` and ``<metric>_n`` per metric, ``seeds``, and
    ``eligible``: every repeat (``repeats`` of them, if given) completed and feasible."""
    rows = trials[trials["kind"] == "multi_task"] if "kind" in trials else trials
    rows = rows.copy()
    rows["config_id"] = _column(rows, "config_id", rows["trial_id"])
    completed = rows["status"] == "completed"
    feasible = _column(rows, "feasible", True).fillna(True).astype(bool)
    rows["_ok"] = completed & feasible
    groups = rows.groupby("config_id", sort=False)
    table = groups.agg(
        method=("method", "first"),
        architecture=("architecture", "first"),
        seeds=("trial_id", "size"),
        ok=("_ok", "all"),
    )
    table["eligible"] = table.pop("ok") & (
        table["seeds"] >= repeats if repeats is not None else True
    )
    for metric in metrics:
        done = rows[completed]
        values = done[metric].astype(float) if metric in done else pd.Series(dtype=float)
        by = values.groupby(done["config_id"])
        table[f"{metric}_mean"] = by.mean()
        table[f"{metric}_std"] = by.std(ddof=1)
        table[f"{metric}_n"] = by.count().reindex(table.index).fillna(0).astype(int)
    return table.reset_index()


def _column(rows: pd.DataFrame, name: str, default: object) -> pd.Series:
    if name not in rows:
        return pd.Series(default, index=rows.index)
    return rows[name].where(rows[name].notna(), default)


def flag_pareto(
    root: Path, study: str, objectives: Sequence[tuple[str, Direction]], repeats: int = 1
) -> pd.DataFrame:
    """Write ``pareto`` (True on the front) into every multi-task trial row of ``study``,
    atomically, and return the configurations with their ``pareto`` flag."""
    try:
        trials = load_trials(root / study)
    except (FileNotFoundError, ValueError):  # no trial reported anything
        return pd.DataFrame()
    rows = trials[trials["kind"] == "multi_task"] if "kind" in trials else trials
    if "stage" in rows:
        rows = rows[rows["stage"].isna()]
    metrics = [metric for metric, _ in objectives]
    table = configurations(rows, metrics, repeats)
    means = table[[f"{m}_mean" for m in metrics]].to_numpy(dtype=float, copy=True)
    means[~table["eligible"].to_numpy()] = np.nan
    table["pareto"] = pareto_mask(means, [d for _, d in objectives])
    front = set(table.loc[table["pareto"], "config_id"])
    config_ids = _column(rows, "config_id", rows["trial_id"])
    stored = _column(rows, "pareto", None)
    for trial_id, config_id, flag in zip(rows["trial_id"], config_ids, stored, strict=True):
        on_front = config_id in front
        if pd.isna(flag) or bool(flag) != on_front:
            # The row as stored: the loaded table carries other trials' columns as nulls.
            row = read_trial_row(root, study, trial_id)
            if row is not None:
                write_trial(root, study, {**row, "pareto": on_front})
    return table
