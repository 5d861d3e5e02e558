"""Names, units and directions of the store's columns, as plots and the report show them."""

from __future__ import annotations

from collections.abc import Iterable

from models.task_metrics import task_metrics

__all__ = [
    "PAPER_METRICS",
    "TASK_NAMES",
    "column_label",
    "higher_is_better",
    "metric_label",
    "param_label",
    "sorted_params",
]

#: How plots name tasks.
TASK_NAMES: dict[str, str] = {
    "semseg": "semantic seg.",
    "depth": "depth",
    "normals": "surface normals",
    "edges": "edges",
    "saliency": "saliency",
    "human_parts": "human parts",
    "detection": "detection",
}

#: The metrics of each task that multi-task papers print (NYUD-v2 and PASCAL-Context
#: tables, e.g. Vandenhende et al. 2021); narrow tables show these, ``--wide`` every one.
PAPER_METRICS: dict[str, tuple[str, ...]] = {
    "semseg": ("miou", "pixel_acc"),
    "human_parts": ("miou",),
    "depth": ("rmse", "abs_rel"),
    "normals": ("mean_angle", "median_angle", "within_11_25"),
    "edges": ("odsf",),
    "saliency": ("max_f",),
    "detection": ("map",),
}

# Metric names with their units; fractions are in [0, 1] (models/tasks.py).
_METRICS: dict[str, str] = {
    "miou": "mIoU",
    "pixel_acc": "pixel acc.",
    "rmse": "RMSE (m)",
    "abs_rel": "abs. rel.",
    "log_rmse": "log RMSE",
    "delta1": "δ<1.25",
    "delta2": "δ<1.25²",
    "delta3": "δ<1.25³",
    "mean_angle": "mean angle (°)",
    "median_angle": "median angle (°)",
    "within_11_25": "within 11.25°",
    "within_22_5": "within 22.5°",
    "within_30": "within 30°",
    "odsf": "odsF",
    "max_f": "maxF",
    "iou": "IoU",
    "map": "mAP@[.5:.95]",
    "map50": "mAP@.5",
    "loss": "loss",
}

# Trial columns that are not per-task metrics.
_COLUMNS: dict[str, tuple[str, bool | None]] = {
    "delta_m": ("Δm (%)", True),
    "best_delta_m": ("best Δm over epochs (%)", True),
    "gflops": ("inference GFLOPs per image", False),
    "gflops_ratio": ("GFLOPs ÷ single-task sum", False),
    "params": ("parameters", False),
    "params_m": ("parameters (M)", False),
    "wall_time_s": ("wall time (s)", False),
}


def _arrow(higher: bool | None) -> str:
    return "" if higher is None else (" ↑" if higher else " ↓")


def _task_metric(column: str) -> tuple[str, str] | None:
    """``final.<task>.<metric>`` / ``best.<task>.<metric>`` → (task, metric)."""
    parts = column.split(".")
    if len(parts) == 3 and parts[0] in ("final", "best"):
        return parts[1], parts[2]
    return None


def higher_is_better(column: str) -> bool:
    """The direction of a trial column: Δm, or a task metric (from its task record).

    Raises ``ValueError`` for a column whose direction is unknown.
    """
    if column in _COLUMNS and _COLUMNS[column][1] is not None:
        return bool(_COLUMNS[column][1])
    found = _task_metric(column)
    if found is not None:
        task, metric = found
        try:
            return task_metrics(task).metric(metric).higher_is_better
        except KeyError as err:
            raise ValueError(f"{column}: {err.args[0]}") from None
    raise ValueError(
        f"cannot tell whether higher or lower {column!r} is better; expected delta_m, "
        "best_delta_m or a task metric such as final.semseg.miou"
    )


def metric_label(task: str, metric: str, arrow: bool = True, with_task: bool = True) -> str:
    """``("depth", "rmse")`` → ``"depth RMSE (m) ↓"`` (``"RMSE (m) ↓"`` without the task)."""
    name = _METRICS.get(metric, metric)
    higher: bool | None = None
    if arrow:
        try:
            higher = task_metrics(task).metric(metric).higher_is_better
        except KeyError:
            higher = None
    prefix = f"{TASK_NAMES.get(task, task)} " if with_task else ""
    return f"{prefix}{name}{_arrow(higher)}"


def column_label(column: str) -> str:
    """A trial column as an axis label, with its unit and direction."""
    if column in _COLUMNS:
        label, higher = _COLUMNS[column]
        return f"{label}{_arrow(higher)}"
    found = _task_metric(column)
    if found is not None:
        task, metric = found
        prefix = "best " if column.startswith("best.") else ""
        return prefix + metric_label(task, metric)
    return column


def param_label(column: str) -> str:
    """``hp.optim.lr`` or Optuna's ``optim/lr`` → ``optim.lr``."""
    return column.removeprefix("hp.").replace("/", ".")


def sorted_params(columns: Iterable[str]) -> list[str]:
    """``hp.*`` columns in reading order: the method, optimiser, model, then per method."""

    def key(column: str) -> tuple[int, str]:
        name = param_label(column)
        if name == "method":
            return (0, name)
        group = name.split(".")[0]
        return ({"optim": 1, "model": 2}.get(group, 3), name)

    return sorted(columns, key=key)
