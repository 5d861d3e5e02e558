"""The terminal leaderboard of a study's multi-task trials."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from models import get_task

__all__ = ["leaderboard", "stage_table"]

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
