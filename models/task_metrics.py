"""How each task is scored: its metrics with their direction, its headline and its KPI.

Imports no torch, so reading a results store (:mod:`study.analysis`) knows which metric
is higher-better without the training stack; :mod:`models.tasks` builds each task's
record from this table. Metrics follow the multi-task dense-prediction literature
(PASCAL-Context / NYUD-v2, e.g. Maninis et al. 2019, Vandenhende et al. 2021);
:mod:`study.metrics` computes them:

| task        | metrics, headline first (+ higher / − lower is better)              | KPI          |
|-------------|---------------------------------------------------------------------|--------------|
| semseg      | miou+, pixel_acc+                                                   | miou         |
| human_parts | miou+                                                               | miou         |
| depth       | rmse−, abs_rel−, log_rmse−, delta1+, delta2+, delta3+               | delta1       |
| normals     | mean_angle−, median_angle−, within_11_25+, within_22_5+, within_30+ | within_11_25 |
| edges       | odsf+                                                               | odsf         |
| saliency    | max_f+, iou+                                                        | max_f        |
| detection   | map+ (COCO mAP@[.5:.95], or VOC mAP@.5 by protocol), map50+         | map          |

Fractions (miou, pixel_acc, delta*, within_*, odsf, max_f, iou) are in [0, 1], not percent;
angles are in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Metric", "TaskMetrics", "list_tasks", "task_metrics"]


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class TaskMetrics:
    """A task's metrics with their direction, headline first.

    ``kpi`` names the metric (in (0, 1], higher is better) that achievement-style
    balancers read; ``headline`` is the metric a leaderboard shows.
    """

    name: str
    metrics: tuple[Metric, ...]
    headline: str
    kpi: str

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"task {self.name!r} has no metric {name!r}")


def _higher(*names: str) -> tuple[Metric, ...]:
    return tuple(Metric(name, True) for name in names)


def _lower(*names: str) -> tuple[Metric, ...]:
    return tuple(Metric(name, False) for name in names)


_TASKS: dict[str, TaskMetrics] = {
    task.name: task
    for task in (
        TaskMetrics("semseg", _higher("miou", "pixel_acc"), headline="miou", kpi="miou"),
        TaskMetrics(
            "depth",
            _lower("rmse", "abs_rel", "log_rmse") + _higher("delta1", "delta2", "delta3"),
            headline="rmse",
            kpi="delta1",
        ),
        TaskMetrics(
            "normals",
            _lower("mean_angle", "median_angle")
            + _higher("within_11_25", "within_22_5", "within_30"),
            headline="mean_angle",
            kpi="within_11_25",
        ),
        TaskMetrics("edges", _higher("odsf"), headline="odsf", kpi="odsf"),
        TaskMetrics("saliency", _higher("max_f", "iou"), headline="max_f", kpi="max_f"),
        TaskMetrics("human_parts", _higher("miou"), headline="miou", kpi="miou"),
        TaskMetrics("detection", _higher("map", "map50"), headline="map", kpi="map"),
    )
}


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def task_metrics(name: str) -> TaskMetrics:
    """The metrics of task ``name``."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; expected one of {list_tasks()}")
    return _TASKS[name]
