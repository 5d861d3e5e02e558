"""The terminal leaderboard of a study's multi-task trials."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import pandas as pd

from models.task_metrics import task_metrics
from study.analysis._labels import PAPER_METRICS, metric_label
from study.analysis._paper import delta_m_definition
from study.analysis._paper_render import WIDTH, fit_text
from study.analysis._pareto import configurations
from study.analysis._tables import _reference, metric_columns
from study.analysis._uncertainty import compare_best_two

__all__ = ["configuration_table", "leaderboard", "pareto_table", "stage_table", "study_summary"]

_PREFIXES = ("hp.optim.", "hp.model.", "hp.")


def _short(column: str) -> str:
    for prefix in _PREFIXES:
        if column.startswith(prefix):
            return column.removeprefix(prefix)
    return column


def _cells(values: Sequence[object], signed: bool = False) -> list[str]:
    def one(v: object) -> str:
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:+.2f}" if signed else f"{v:.4g}"
        return str(v)

    return [one(v) for v in values]


def leaderboard(
    trials: pd.DataFrame, tasks: Sequence[str], limit: int = 20, wide: bool = False
) -> str:
    """The completed multi-task trials, best first by Δm (by validation loss when there are
    no references), in 120 columns: the single-task baselines first, the metrics papers
    report with ↑/↓, parameters and Δm, then a line that counts the trials not ranked
    (stopped early, running, failed: their metrics are of fewer epochs, or none) and one
    that defines Δm. ``wide`` adds every other metric and the sampled hyperparameters."""
    rows = trials[trials["kind"] == "multi_task"] if "kind" in trials else trials
    unranked = _unranked(rows)
    if "status" in rows:
        rows = rows[rows["status"] == "completed"]
    if rows.empty:
        return "no completed multi-task trials yet" + (f"; {unranked}" if unranked else "")
    has_delta = "delta_m" in rows and rows["delta_m"].notna().any()
    if has_delta:
        rows = rows.sort_values("delta_m", ascending=False, na_position="last", kind="stable")
    elif "val_loss" in rows:
        rows = rows.sort_values("val_loss", na_position="last", kind="stable")
    rows = rows.head(limit)
    metrics = metric_columns(rows, tasks)
    paper = [m for m in metrics if m[1].split(".")[2] in _paper_metrics(m[0])]
    shown = paper + [m for m in metrics if m not in paper and wide]
    reference = _reference(trials, rows, tasks) if has_delta else {}
    top: list[object] = [None] if reference else []  # the baselines' row

    def column(values: Sequence[object], first: object = "") -> list[object]:
        return [*([first] if reference else []), *values]

    heads = [("trial", _cells(column(rows["trial_id"].tolist(), "baselines")))]
    heads.append(("method", _cells(column(rows["method"].tolist(), "single-task"))))
    if "architecture" in rows and rows["architecture"].nunique() > 1:
        heads.append(("architecture", _cells(column(rows["architecture"].tolist()))))
    body = []
    for task, key, _ in shown:
        metric = key.split(".")[2]
        values = [reference.get(key)] if reference else []
        body.append(
            (
                f"{task} {metric_label(task, metric, with_task=False)}",
                _cells([*values, *rows[key].astype(float)]),
            )
        )
    hp = [c for c in rows.columns if c.startswith("hp.") and c != "hp.method"]
    for key in (c for c in hp if wide and rows[c].notna().any()):
        body.append((_short(key), _cells(column(rows[key].tolist()))))
    if "params" in rows:
        params = [*top, *(rows["params"].astype(float) / 1e6)]
        if reference:
            params[0] = reference.get("params_m")
        body.append(("params M", _cells(params)))
    if has_delta:
        delta = [*([0.0] if reference else []), *rows["delta_m"].astype(float)]
        body.append(("Δm (%) ↑", _cells(delta, signed=True)))
    lines, kept = fit_text(heads, body, has_delta, wide)
    hidden = len(body) - kept + len(metrics) - len(shown)
    if hidden or (hp and not wide):
        lines.append(
            f"({hidden} more metric column(s) and the hyperparameters: "
            "mtlstudy run --wide, table --wide, leaderboard(wide=True), query)"
        )
    if unranked:
        lines.append(f"not ranked: {unranked}")
    if has_delta:
        # Many tasks' baselines take more than one line of the 120 columns.
        definition = _delta_m_line(trials, rows, tasks)
        lines += textwrap.wrap(definition, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    return "\n".join(lines)


#: The statuses a leaderboard leaves out, as it names them.
_NOT_RANKED = {"stopped_early": "stopped early", "running": "running", "error": "failed"}


def _unranked(rows: pd.DataFrame) -> str:
    """``2 stopped early, 1 failed``: the trials of ``rows`` that did not complete."""
    if "status" not in rows:
        return ""
    counts = rows["status"].value_counts()
    return ", ".join(f"{counts[s]} {name}" for s, name in _NOT_RANKED.items() if s in counts)


def _delta_m_line(trials: pd.DataFrame, rows: pd.DataFrame, tasks: Sequence[str]) -> str:
    """Δm's definition with the headline metrics of the baselines ``rows`` name."""
    reference = _reference(trials, rows, tasks)
    baselines = {}
    for task in tasks:
        metric = task_metrics(task).headline
        if f"final.{task}.{metric}" in reference:
            label = metric_label(task, metric, arrow=False, with_task=False)
            baselines[f"{task} {label}"] = float(reference[f"final.{task}.{metric}"])
    return delta_m_definition(baselines)


def _paper_metrics(task: str) -> tuple[str, ...]:
    return PAPER_METRICS.get(task, (task_metrics(task).headline,))


_LABELS = {
    "delta_m": "Δm (%) ↑",
    "gflops": "GFLOPs ↓",
    "params": "params M ↓",
    "val_loss": "val loss ↓",
}
_SCALE = {"params": 1e-6}


def _headline(tasks: Sequence[str]) -> list[str]:
    return [f"final.{t}.{task_metrics(t).headline}" for t in tasks]


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
        parts = metric.split(".")
        label = _LABELS.get(metric) or (
            f"{parts[1]} {metric_label(parts[1], parts[2], with_task=False)}"
            if len(parts) == 3 and parts[0] == "final"
            else _short(metric)
        )
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
    arrows = ", ".join(_LABELS.get(m, f"{m} {'↑' if d == 'max' else '↓'}") for m, d in objectives)
    body = configuration_table(trials, tasks, objectives, front_only=True)
    return f"Pareto front ({arrows}):\n{body}"


def study_summary(
    trials: pd.DataFrame,
    tasks: Sequence[str],
    objectives: Sequence[tuple[str, str]],
    repeats: int = 1,
    wide: bool = False,
) -> str:
    """What ``mtlstudy run`` prints at the end: the leaderboard (per configuration, with
    the spread over seeds, when there are repeats), the Pareto front of several
    objectives, and whether the best method's lead survives the seeds. ``wide`` shows
    every metric and the hyperparameters in the leaderboard of single runs."""
    blocks = [
        configuration_table(trials, tasks, objectives)
        if repeats > 1
        else leaderboard(trials, tasks, wide=wide)
    ]
    rows = trials[trials["kind"] == "multi_task"] if "kind" in trials else trials
    if repeats > 1 and "delta_m" in rows and rows["delta_m"].notna().any():
        blocks[0] += "\n" + _delta_m_line(trials, rows, tasks)
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
        record = task_metrics(task)
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
