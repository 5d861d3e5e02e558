"""The report's tables: the leaderboard in the format of multi-task papers, and HTML helpers.

Every string that reaches HTML goes through :func:`esc` (``html.escape``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd

from models.task_metrics import task_metrics
from study.analysis._data import multi_task_trials
from study.analysis._labels import TASK_NAMES, metric_label

__all__ = [
    "esc",
    "fmt",
    "html_table",
    "leaderboard_html",
    "leaderboard_table",
    "metric_columns",
    "unique",
]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 4) -> str:
    """A cell's text: floats to ``digits`` significant digits, lists joined, NaN as –."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, digits) for v in value)
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def html_table(
    rows: Sequence[Sequence[str]],
    header: Sequence[str] | str,
    classes: Sequence[str] = ("text",),
    row_classes: Sequence[str] = (),
    css_class: str = "",
) -> str:
    """An HTML table of already-escaped cells. ``header`` is one row of cells, or ready
    ``<thead>`` HTML; ``classes[i]`` is column i's CSS class (``text`` left-aligns; columns past
    the list are numbers); ``row_classes[j]`` is row j's."""

    def cls(items: Sequence[str], i: int) -> str:
        return f' class="{items[i]}"' if i < len(items) and items[i] else ""

    table_class = f' class="{css_class}"' if css_class else ""
    if isinstance(header, str):
        head = header
    else:
        head = "<thead><tr>"
        head += "".join(f"<th{cls(classes, i)}>{h}</th>" for i, h in enumerate(header))
        head += "</tr></thead>"
    body = "".join(
        f"<tr{cls(row_classes, j)}>"
        + "".join(f"<td{cls(classes, i)}>{c}</td>" for i, c in enumerate(row))
        + "</tr>"
        for j, row in enumerate(rows)
    )
    return f'<div class="scroll"><table{table_class}>{head}<tbody>{body}</tbody></table></div>'


def unique(trials: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of a column in order of appearance (tasks: flattened lists)."""
    if column not in trials:
        return []
    values = trials[column].dropna()
    if column == "tasks":
        return list(dict.fromkeys(t for tasks in values for t in list(tasks)))
    return [fmt(v) for v in dict.fromkeys(values.tolist())]


def metric_columns(rows: pd.DataFrame, tasks: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(task, ``final.<task>.<metric>``, higher is better) of every metric the rows have, in
    task order and each task's metric order (headline first)."""
    found = []
    for task in tasks:
        try:
            record = task_metrics(task)
        except KeyError:
            continue
        for metric in record.metrics:
            column = f"final.{task}.{metric.name}"
            if column in rows and rows[column].notna().any():
                found.append((task, column, metric.higher_is_better))
    return found


def _reference(trials: pd.DataFrame, rows: pd.DataFrame, tasks: Sequence[str]) -> dict:
    """The single-task baselines' final metrics, each task from the reference trial that
    most of ``rows`` name in ``baseline_trials.<task>``; their GFLOPs and parameters summed
    (one model per task)."""
    reference: dict[str, object] = {}
    ids = []
    for task in tasks:
        column = f"baseline_trials.{task}"
        if column not in rows or rows[column].dropna().empty:
            continue
        trial_id = str(rows[column].dropna().mode().iloc[0])
        match = trials[trials["trial_id"] == trial_id]
        if match.empty:
            continue
        ids.append(trial_id)
        for c in match.columns:
            if c.startswith(f"final.{task}."):
                reference[c] = match.iloc[0][c]
    if reference:
        reference["trial_id"] = ", ".join(ids)
        chosen = trials[trials["trial_id"].isin(ids)]
        if "gflops" in chosen and chosen["gflops"].notna().all():
            reference["gflops"] = float(chosen["gflops"].sum())
        if "params" in chosen and chosen["params"].notna().all():
            reference["params_m"] = float(chosen["params"].sum()) / 1e6
    return reference


def leaderboard_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard: per data setting (``data_key``, seeds pooled), the single-task
    baselines (``rank`` 0, ``method`` ``single-task``, Δm 0, the sum of their GFLOPs and
    parameters), then the completed multi-task trials, best Δm first (``rank`` 1, 2, …),
    with their ``final.*`` metrics, ``gflops``, ``params_m`` and ``delta_m``."""
    done = multi_task_trials(trials)
    tables = []
    for dataset, rows in done.groupby("data_key", sort=True):
        if "delta_m" in rows and rows["delta_m"].notna().any():
            rows = rows.sort_values("delta_m", ascending=False, na_position="last", kind="stable")
        tasks = unique(rows, "tasks")
        metrics = [c for _, c, _ in metric_columns(rows, tasks)]
        table = rows[["trial_id", "method", "architecture"]].copy()
        for column in [*metrics, "gflops", "delta_m"]:
            table[column] = rows[column].astype(float) if column in rows else float("nan")
        table["params_m"] = rows["params"].astype(float) / 1e6 if "params" in rows else None
        table.insert(0, "rank", range(1, len(table) + 1))
        reference = _reference(trials, rows, tasks)
        if reference:
            first = {c: reference.get(c, float("nan")) for c in [*metrics, "gflops", "params_m"]}
            first |= {
                "rank": 0,
                "method": "single-task",
                "architecture": "",
                "trial_id": reference["trial_id"],
                "delta_m": 0.0,
            }
            table = pd.concat([pd.DataFrame([first]), table], ignore_index=True)
        table.insert(0, "data_key", dataset)
        tables.append(table.reset_index(drop=True))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _header(metrics: Sequence[tuple[str, str, bool]], has_delta: bool) -> str:
    """Two header rows: each task over its metrics (with ↑/↓), as papers print them."""
    ids = ["#", "method", "architecture", "trial"]
    tail = ["GFLOPs", "params (M)"] + (["Δm (%) ↑"] if has_delta else [])
    top = "".join(
        f'<th rowspan="2" class="text{" pinned" if h == "method" else ""}">{h}</th>' for h in ids
    )
    groups: dict[str, int] = {}
    for task, _, _ in metrics:
        groups[task] = groups.get(task, 0) + 1
    top += "".join(
        f'<th colspan="{n}" class="task">{esc(TASK_NAMES.get(t, t))}</th>'
        for t, n in groups.items()
    )
    top += "".join(f'<th rowspan="2">{esc(h)}</th>' for h in tail)
    second = "".join(
        f"<th>{esc(metric_label(t, c.split('.')[2], with_task=False))}</th>" for t, c, _ in metrics
    )
    spans = [4, *groups.values(), len(tail)]
    columns = "".join(f'<colgroup span="{n}"></colgroup>' for n in spans)
    return f"{columns}<thead><tr>{top}</tr><tr>{second}</tr></thead>"


def leaderboard_html(trials: pd.DataFrame, limit: int = 50) -> str:
    """The leaderboard tables (one per dataset) as HTML; the best value of each column in
    bold, the single-task row first."""
    table = leaderboard_table(trials)
    if table.empty:
        return '<p class="note">No completed multi-task trial.</p>'
    out = []
    several = table["data_key"].nunique() > 1
    for dataset, rows in table.groupby("data_key", sort=True):
        multi = rows[rows["rank"] > 0]
        metrics = metric_columns(multi, unique(multi_task_trials(trials), "tasks"))
        has_delta = bool(multi["delta_m"].notna().any())
        best = {c: (multi[c].max() if h else multi[c].min()) for _, c, h in metrics}
        best["delta_m"] = multi["delta_m"].max()
        cells, classes = [], []
        shown = pd.concat([rows[rows["rank"] == 0], multi.head(limit)])
        for _, row in shown.iterrows():
            reference = row["rank"] == 0
            line = [
                "" if reference else str(row["rank"]),
                esc(row["method"]),
                esc(row["architecture"]),
                esc(row["trial_id"]),
            ]
            for _, c, _ in metrics:
                text = esc(fmt(row[c]))
                line.append(
                    f'<b class="best">{text}</b>' if not reference and row[c] == best[c] else text
                )
            line += [esc(fmt(row["gflops"])), esc(fmt(row["params_m"]))]
            if has_delta:
                text = "–" if pd.isna(row["delta_m"]) else f"{row['delta_m']:+.2f}"
                bold = not reference and row["delta_m"] == best["delta_m"]
                line.append(f'<b class="best">{text}</b>' if bold else text)
            cells.append(line)
            classes.append("reference" if reference else "")
        title = f"<h3>dataset: {esc(dataset)}</h3>" if several else ""
        more = (
            f'<p class="note">Showing the best {limit} of {len(multi)}.</p>'
            if len(multi) > limit
            else ""
        )
        header = _header(metrics, has_delta)
        out.append(
            title
            + html_table(cells, header, ("", "text pinned", "text", "text"), classes, "leaderboard")
            + more
        )
    return "\n".join(out)
