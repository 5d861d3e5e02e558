"""The tidy data each plot draws, computed from the store's trials and history DataFrames.

Every function here is pure: DataFrames in (as :func:`study.store.load` returns them),
a DataFrame out, with one row per mark the plot draws. Tests compare these to the store.

Which trials count:

- Results (``pareto``, ``heatmap``, ``ranks``, the report's leaderboard) use the
  multi-task trials that ran all their epochs (``status == 'completed'``). A trial a
  scheduler stopped early reports metrics of fewer epochs, which are not comparable.
- Dynamics and the search (``curves``, ``weights``, ``parallel``) also show the trials
  stopped early (``stopped_early``), since that is what the search saw.
- Trials still ``running`` and failed ones (``error``) are never drawn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from models.task_metrics import task_metrics
from study.analysis._labels import higher_is_better, param_label, sorted_params
from study.analysis._pareto import pareto_mask

__all__ = [
    "FINISHED",
    "RUNS",
    "PlotDataError",
    "curves_data",
    "data_key",
    "heatmap_data",
    "multi_task_trials",
    "parallel_data",
    "pareto_data",
    "pareto_front",
    "rank_table",
    "ranks_data",
    "task_order",
    "weights_data",
]

#: Statuses whose metrics are results.
FINISHED: tuple[str, ...] = ("completed",)
#: Statuses drawn as runs of the search (curves, weights, parallel coordinates).
RUNS: tuple[str, ...] = ("completed", "stopped_early")

_IDS = ("study", "trial_id", "dataset_key", "architecture", "method", "seed", "status")
_X = {"gflops": "gflops", "params": "params"}


class PlotDataError(ValueError):
    """The trials or history hold nothing that a plot can draw (one line, says why)."""


def multi_task_trials(trials: pd.DataFrame, statuses: Sequence[str] = FINISHED) -> pd.DataFrame:
    """The multi-task trials with one of ``statuses``, with every id column present and
    ``data_key`` (:func:`data_key` of ``dataset_key``)."""
    rows = trials
    if "kind" in rows:
        rows = rows[rows["kind"].fillna("multi_task") == "multi_task"]
    if "status" in rows:
        rows = rows[rows["status"].isin(list(statuses))]
    rows = rows.copy()
    for column in _IDS:
        if column not in rows:
            rows[column] = "-" if column != "seed" else np.nan
    for column in ("dataset_key", "architecture", "method", "study"):
        rows[column] = rows[column].fillna("-").astype(str)
    rows["data_key"] = rows["dataset_key"].map(data_key)
    return rows.reset_index(drop=True)


def data_key(dataset_key: str) -> str:
    """The dataset key without its seed (``:seed<N>``, which synthetic data's key carries):
    trials of one data setting under different seeds are replicates, pooled over seeds."""
    return re.sub(r":seed-?\d+(?=:|$)", "", dataset_key)


def _require(rows: pd.DataFrame, column: str, what: str, statuses: Sequence[str]) -> None:
    if rows.empty:
        raise PlotDataError(f"{what}: no multi-task trial with status {' or '.join(statuses)}")
    if column not in rows or rows[column].notna().sum() == 0:
        hint = (
            "; Δm needs single-task baselines (spec 'baselines: auto' or 'store')"
            if "delta_m" in column
            else ""
        )
        raise PlotDataError(f"{what}: no {' or '.join(statuses)} trial has {column!r}{hint}")


def pareto_front(x: Sequence[float], y: Sequence[float], higher_y: bool = True) -> np.ndarray:
    """Which points are non-dominated, with lower ``x`` better and ``y`` in its direction;
    equal points are on the front together."""
    values = np.column_stack([np.asarray(x, dtype=float), np.asarray(y, dtype=float)])
    return pareto_mask(values, ["min", "max" if higher_y else "min"])


def pareto_data(trials: pd.DataFrame, x: str = "gflops", y: str = "delta_m") -> pd.DataFrame:
    """One row per configuration (``config_id``; a trial without one is its own) of the
    completed multi-task trials with ``x`` and ``y``: the means over its seeds ``x`` (GFLOPs,
    or parameters in millions for ``x='params'``) and ``y``, ``y_std`` (NaN with one seed),
    ``seeds``, and ``on_front``."""
    if x not in _X:
        raise ValueError(f"x must be one of {sorted(_X)}, got {x!r}")
    higher = higher_is_better(y)
    rows = multi_task_trials(trials)
    _require(rows, _X[x], "pareto", FINISHED)
    _require(rows, y, "pareto", FINISHED)
    rows = rows.dropna(subset=[_X[x], y])
    if rows.empty:
        raise PlotDataError(f"pareto: no completed trial has both {_X[x]!r} and {y!r}")
    data = rows[["study", "trial_id", "architecture", "method"]].copy()
    data["config_id"] = (
        rows["config_id"].fillna(rows["trial_id"]) if "config_id" in rows else (rows["trial_id"])
    )
    data["x"] = rows[_X[x]].astype(float) / (1e6 if x == "params" else 1.0)
    data["y"] = rows[y].astype(float)
    data = data.groupby(["study", "config_id"], as_index=False, sort=False).agg(
        trial_id=("trial_id", "first"),
        architecture=("architecture", "first"),
        method=("method", "first"),
        x=("x", "mean"),
        y=("y", "mean"),
        y_std=("y", "std"),
        seeds=("y", "size"),
    )
    data["on_front"] = pareto_front(data["x"], data["y"], higher)
    data.attrs = {"x": "params_m" if x == "params" else x, "y": y, "higher_is_better": higher}
    return data.sort_values(["x", "y"]).reset_index(drop=True)


def _best(values: pd.Series, higher: bool) -> float:
    return float(values.max() if higher else values.min())


def heatmap_data(trials: pd.DataFrame, value: str = "delta_m") -> pd.DataFrame:
    """Per data setting (``data_key``) × architecture × method: the mean and standard
    deviation over seeds of
    each seed's best ``value`` (the result of that seed's search), ``seeds`` and ``trials``.

    With one trial per seed, the mean is the mean of those trials; ``std`` is NaN with a
    single seed."""
    higher = higher_is_better(value)
    rows = multi_task_trials(trials)
    _require(rows, value, "heatmap", FINISHED)
    rows = rows.dropna(subset=[value])
    keys = ["data_key", "architecture", "method"]
    per_seed = (
        rows.groupby([*keys, "seed"], dropna=False)[value]
        .agg(best=lambda v: _best(v, higher), trials="size")
        .reset_index()
    )
    cells = (
        per_seed.groupby(keys, dropna=False)
        .agg(
            mean=("best", "mean"),
            std=("best", "std"),
            seeds=("best", "size"),
            trials=("trials", "sum"),
        )
        .reset_index()
    )
    cells.attrs = {"value": value}
    return cells


def _history_of(
    trials: pd.DataFrame, history: pd.DataFrame, split: str, what: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = multi_task_trials(trials, RUNS)
    if runs.empty:
        raise PlotDataError(f"{what}: no multi-task trial with status {' or '.join(RUNS)}")
    if history.empty or not {"trial_id", "split", "task", "metric"} <= set(history):
        raise PlotDataError(f"{what}: the store has no history rows")
    rows = history[(history["split"] == split) & (history["task"] != "all")]
    if "study" not in rows:
        rows = rows.assign(study="-")
    return runs, rows


def _join(runs: pd.DataFrame, rows: pd.DataFrame, what: str) -> pd.DataFrame:
    ids = runs[["study", "trial_id", "architecture", "method"]]
    data = rows[["study", "trial_id", "task", "metric", "epoch", "value"]].merge(
        ids, on=["study", "trial_id"], how="inner"
    )
    if data.empty:
        raise PlotDataError(f"{what}: no history rows of {' or '.join(RUNS)} multi-task trials")
    columns = ["study", "trial_id", "architecture", "method", "task", "metric", "epoch", "value"]
    order = {t: i for i, t in enumerate(task_order(runs, data["task"]))}
    data = data.assign(_order=data["task"].map(order))
    data = data.sort_values(["_order", "method", "trial_id", "epoch"])
    return data[columns].reset_index(drop=True)


def task_order(trials: pd.DataFrame, tasks: Iterable[str] = ()) -> list[str]:
    """Tasks in the order the trials list them (their ``tasks`` column), then any others."""
    listed = trials["tasks"].dropna() if "tasks" in trials else []
    order = dict.fromkeys(t for names in listed for t in list(names))
    order.update(dict.fromkeys(sorted(set(tasks) - set(order))))
    return list(order)


def _headline(task: str) -> str | None:
    try:
        return task_metrics(task).headline
    except KeyError:
        return None


def curves_data(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Each task's headline validation metric per epoch: one row per history row
    ``val/<task>/<headline>`` of a completed or stopped-early multi-task trial."""
    runs, rows = _history_of(trials, history, "val", "curves")
    headline = rows["task"].map({t: _headline(t) for t in rows["task"].unique()})
    return _join(runs, rows[rows["metric"] == headline], "curves")


def weights_data(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The balancer's task weights per epoch, and the achievements of methods that keep
    them (AMTL's KPI ÷ potential): one row per ``train/<task>/weight`` or
    ``train/<task>/achievement`` history row of a completed or stopped-early multi-task
    trial (``metric`` says which, ``value`` is it)."""
    runs, rows = _history_of(trials, history, "train", "weights")
    return _join(runs, rows[rows["metric"].isin(["weight", "achievement"])], "weights")


def _headline_columns(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(task, ``final.<task>.<headline>``) for each task with such a column."""
    found = []
    for column in rows.columns:
        parts = column.split(".")
        if len(parts) == 3 and parts[0] == "final" and _headline(parts[1]) == parts[2]:
            if rows[column].notna().any():
                found.append((parts[1], column))
    return found


def rank_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Each method's rank per data setting (``data_key``) × architecture × task, on the
    task's headline metric.

    A method's score in a setting is the mean over seeds of its best value in each seed
    (direction from the task record); ranks are 1 (best) to the number of methods there,
    ties share the mean rank. Settings with fewer than two methods are left out."""
    rows = multi_task_trials(trials)
    if rows.empty:
        raise PlotDataError("ranks: no completed multi-task trial")
    tables = []
    for (dataset, architecture), group in rows.groupby(["data_key", "architecture"]):
        for task, column in _headline_columns(group):
            higher = higher_is_better(column)
            valid = group.dropna(subset=[column])
            if valid["method"].nunique() < 2:
                continue
            per_seed = valid.groupby(["method", "seed"], dropna=False)[column].agg(
                lambda v, h=higher: _best(v, h)
            )
            score = per_seed.groupby(level="method").mean()
            table = pd.DataFrame(
                {
                    "data_key": dataset,
                    "architecture": architecture,
                    "task": task,
                    "metric": column.split(".")[2],
                    "method": score.index,
                    "value": score.to_numpy(),
                    "rank": score.rank(ascending=not higher, method="average").to_numpy(),
                }
            )
            tables.append(table)
    if not tables:
        raise PlotDataError(
            "ranks: no dataset, architecture and task with completed trials of two methods"
        )
    return pd.concat(tables, ignore_index=True)


def ranks_data(trials: pd.DataFrame) -> pd.DataFrame:
    """Per method: ``mean_rank`` over the settings of :func:`rank_table` (lower is better),
    ``std`` and ``settings`` (how many it was ranked in), best first."""
    table = rank_table(trials)
    summary = (
        table.groupby("method")
        .agg(mean_rank=("rank", "mean"), std=("rank", "std"), settings=("rank", "size"))
        .reset_index()
    )
    return summary.sort_values(["mean_rank", "method"]).reset_index(drop=True)


def _axis(values: pd.Series) -> tuple[str, pd.Series, pd.Series, pd.Series]:
    """(scale, numeric value, label, position in [0, 1]) of one hyperparameter's values."""
    present = values.dropna()
    numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
    if numeric:
        number = values.astype(float)
        low, high = number.min(), number.max()
        log = low > 0 and high / low >= 10
        scaled = np.log10(number) if log else number
        lo, hi = scaled.min(), scaled.max()
        position = (scaled - lo) / (hi - lo) if hi > lo else scaled * 0 + 0.5
        label = number.map(lambda v: "" if pd.isna(v) else f"{v:.3g}")
        return ("log" if log else "linear"), number, label, position
    text = values.map(
        lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    )
    categories = sorted(text.dropna().unique())
    step = 1 / (len(categories) - 1) if len(categories) > 1 else 0.0
    index = {c: (i * step if len(categories) > 1 else 0.5) for i, c in enumerate(categories)}
    position = text.map(lambda c: np.nan if c is None else index[c]).astype(float)
    return "category", pd.Series(np.nan, index=values.index), text.fillna(""), position


def parallel_data(trials: pd.DataFrame, color: str = "delta_m") -> pd.DataFrame:
    """Parallel coordinates: one row per (trial, sampled hyperparameter it has).

    Axes are the ``hp.*`` columns (method, optimiser, model, then each method's own), in
    that order. ``position`` is the value scaled to [0, 1] over the drawn trials (log10
    first when positive values span a factor of 10 or more; categories evenly spaced in
    sorted order); ``value`` the number itself (NaN for a category), ``label`` its text,
    and ``color`` the trial's ``color`` column (Δm by default)."""
    rows = multi_task_trials(trials, RUNS)
    _require(rows, color, "parallel", RUNS)
    rows = rows.dropna(subset=[color]).reset_index(drop=True)
    params = sorted_params(c for c in rows.columns if c.startswith("hp.") and rows[c].notna().any())
    if not params:
        raise PlotDataError("parallel: the trials have no sampled hyperparameters (hp.*)")
    frames = []
    for axis, column in enumerate(params):
        scale, value, label, position = _axis(rows[column])
        frame = rows[["study", "trial_id", "method", "status"]].copy()
        frame = frame.assign(
            axis=axis,
            param=param_label(column),
            scale=scale,
            value=value,
            label=label,
            position=position,
            color=rows[color].astype(float),
        )
        frames.append(frame[rows[column].notna()])
    data = pd.concat(frames, ignore_index=True)
    data.attrs = {"color": color}
    return data
