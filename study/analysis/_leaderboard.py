"""The terminal leaderboard of a study's multi-task trials."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from models import get_task
from study.analysis._pareto import configurations
from study.analysis._uncertainty import compare_best_two

__all__ = ["configuration_table", "leaderboard", "pareto_table", "stage_table", "study_summary"]

_PREFIXES = ("hp.optim.", "hp.model.", "hp.")


def _short(column: str) -> str:
    for prefix in _PREFIXES:
        if column.startswith(prefix):
            return column.removeprefix(prefix)
    return column


def leaderboard(trials: pd.DataFrame, tasks: Sequence[str], limit: int = 20) -> str:
    """Best first by Δm (by validation loss when there are no references)."""
    rows = trials[trials["kind"] == "multi_task"] if "kind" in trials else trials
    if rows.empty:
        return "no multi-task trials yet"
    has_delta = "delta_m" in rows and rows["delta_m"].notna().any()
    if has_delta:
        rows = rows.sort_values("delta_m", ascending=False, na_position="last")
    hp = [c for c in rows.columns if c.startswith("hp.") and c != "hp.method"]
    headline = []
    for task in tasks:
        column = f"final.{task}.{get_task(task).headline}"
        if column in rows:
            headline.append(column)
    columns = ["trial_id", "method", "status", "epochs", *hp, *headline, "params"]
    columns += ["delta_m"] if has_delta else []
    table = rows[[c for c in columns if c in rows]].head(limit).copy()
    if "params" in table:
        table["params"] = table["params"] / 1e6
    table.columns = [_short(c).removeprefix("final.") for c in table.columns]
    table = table.rename(columns={"params": "params M"})
    if "delta_m" in table:
        table = table.rename(columns={"delta_m": "Δm %"})
    return table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


_LABELS = {"delta_m": "Δm %", "gflops": "GFLOPs", "params": "params M", "val_loss": "val loss"}
_SCALE = {"params": 1e-6}


def _headline(tasks: Sequence[str]) -> list[str]:
    return [f"final.{t}.{get_task(t).headline}" for t in tasks]


def configuration_table(
    trials: pd.DataFrame,
    tasks: Sequence[str],
    objectives: Sequence[tuple[str, str]],
    limit: int = 20,
    front_only: bool = False,
) -> str:
    """One row per configuration: its method, architecture, seeds and each objective's
    mean ± standard deviation over them, best first by the first objective."""
    metrics = list(dict.fromkeys([*(m for m, _ in objectives), *_headline(tasks), "params"]))
    metrics = [m for m in metrics if m in trials]
    table = configurations(trials, metrics)
    if front_only:
        if "pareto" not in trials:
            return "no Pareto front flagged"
        on_front = trials.loc[trials["pareto"].fillna(False).astype(bool), "config_id"]
        table = table[table["config_id"].isin(set(on_front))]
    first, mode = objectives[0]
    if f"{first}_mean" in table:
        table = table.sort_values(f"{first}_mean", ascending=mode == "min", na_position="last")
    out = table[["config_id", "method", "architecture", "seeds"]].head(limit).copy()
    for metric in metrics:
        scale = _SCALE.get(metric, 1.0)
        mean, std = table[f"{metric}_mean"] * scale, table[f"{metric}_std"] * scale
        label = _LABELS.get(metric, _short(metric).removeprefix("final."))
        out[label] = [_pm(m, s) for m, s in zip(mean.head(limit), std.head(limit), strict=True)]
    if out.empty:
        return "no completed configurations"
    return out.to_string(index=False)


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.4g}" if pd.isna(std) else f"{mean:.4g} ± {std:.2g}"


def pareto_table(
    trials: pd.DataFrame, tasks: Sequence[str], objectives: Sequence[tuple[str, str]]
) -> str:
    """The configurations on the Pareto front of ``objectives``."""
    arrows = ", ".join(f"{_LABELS.get(m, m)} {'↑' if d == 'max' else '↓'}" for m, d in objectives)
    body = configuration_table(trials, tasks, objectives, front_only=True)
    return f"Pareto front ({arrows}):\n{body}"


def study_summary(
    trials: pd.DataFrame,
    tasks: Sequence[str],
    objectives: Sequence[tuple[str, str]],
    repeats: int = 1,
) -> str:
    """What ``mtlstudy run`` prints at the end: the leaderboard (per configuration, with
    the spread over seeds, when there are repeats), the Pareto front of several
    objectives, and whether the best method's lead survives the seeds."""
    blocks = [
        configuration_table(trials, tasks, objectives)
        if repeats > 1
        else leaderboard(trials, tasks)
    ]
    if len(objectives) > 1:
        blocks.append(pareto_table(trials, tasks, objectives))
    metric, mode = objectives[0]
    comparison = compare_best_two(trials, metric, mode) if repeats > 1 else None
    if comparison is not None:
        blocks.append(comparison.describe())
    return "\n\n".join(blocks)


_COMPUTE = {
    "compute.weight_density": "ΔW dens",
    "compute.activation_density": "δ dens",
    "compute.gflops": "GFLOPs",
    "compute.gflops_vs_dense": "× dense",
    "compute.stored_parameters": "stored",
}


def stage_table(trials: pd.DataFrame, stages: Sequence[tuple[str, str]]) -> str:
    """A staged study, stage by stage (``(name, task)`` in order): each trial's KPI of the
    task it trained, its hyperparameters and what that task costs with sharing."""
    if "stage" not in trials:
        return "no stage trials yet"
    blocks = []
    for name, task in stages:
        rows = trials[trials["stage"] == name]
        if rows.empty:
            continue
        record = get_task(task)
        kpi = f"final.{task}.{record.kpi}"
        rows = rows.sort_values(kpi, ascending=False) if kpi in rows else rows
        hp = [
            c
            for c in rows.columns
            if c.startswith(("hp.optim.", "hp.model.")) and rows[c].notna().any()
        ]
        columns = ["trial_id", "status", *hp, kpi, *_COMPUTE]
        table = rows[[c for c in columns if c in rows]].copy()
        table.columns = [_COMPUTE.get(c, _short(c).removeprefix("final.")) for c in table.columns]
        text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")
        blocks.append(f"stage {name}\n{text}")
    return "\n\n".join(blocks) if blocks else "no stage trials yet"
