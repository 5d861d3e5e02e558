"""Task records: what a task predicts, how it is trained, and how it is scored.

Tensor conventions (B = batch, H×W = image size):

| task     | prediction           | target                          | invalid / ignored  |
|----------|----------------------|---------------------------------|--------------------|
| semseg   | logits (B, K, H, W)  | class ids, int64 (B, H, W)      | 255                |
| depth    | metres (B, 1, H, W)  | metres, float (B, 1, H, W)      | 0                  |
| normals  | unit (B, 3, H, W)    | unit vectors, float (B, 3, H, W)| all-zero vector    |
| edges    | logits (B, 1, H, W)  | {0, 1}, float (B, 1, H, W)      | 255                |
| saliency | logits (B, 1, H, W)  | {0, 1}, float (B, 1, H, W)      | 255                |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "Metric", "Task", "get_task", "list_tasks"]

IGNORE_INDEX = 255

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class Task:
    """One task: output channels, loss, metrics with their direction, and its KPI.

    ``kpi`` names the metric (in (0, 1], higher is better) that achievement-style
    balancers read; ``headline`` is the metric a leaderboard shows.
    """

    name: str
    channels: int
    loss: LossFn
    metrics: tuple[Metric, ...]
    headline: str
    kpi: str

    def metric(self, name: str) -> Metric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise KeyError(f"task {self.name!r} has no metric {name!r}")


def _semseg_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not (target != IGNORE_INDEX).any():
        return pred.sum() * 0.0
    return F.cross_entropy(pred, target, ignore_index=IGNORE_INDEX)


def _depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = target > 0
    if not valid.any():
        return pred.sum() * 0.0
    return F.l1_loss(pred[valid], target[valid])


def _normals_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = target.abs().sum(dim=1, keepdim=True) > 0
    if not valid.any():
        return pred.sum() * 0.0
    mask = valid.expand_as(pred)
    return F.l1_loss(pred[mask], target[mask])


def _binary_loss(pos_weight: float) -> LossFn:
    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        if not valid.any():
            return pred.sum() * 0.0
        weight = torch.tensor(pos_weight, dtype=pred.dtype, device=pred.device)
        return F.binary_cross_entropy_with_logits(pred[valid], target[valid], pos_weight=weight)

    return loss


def _make_tasks(num_classes: int) -> dict[str, Task]:
    return {
        "semseg": Task(
            "semseg",
            num_classes,
            _semseg_loss,
            (Metric("miou", True), Metric("pixel_acc", True)),
            headline="miou",
            kpi="miou",
        ),
        "depth": Task(
            "depth",
            1,
            _depth_loss,
            (Metric("rmse", False), Metric("abs_rel", False), Metric("delta1", True)),
            headline="rmse",
            kpi="delta1",
        ),
        "normals": Task(
            "normals",
            3,
            _normals_loss,
            (Metric("mean_angle", False), Metric("within_11_25", True)),
            headline="mean_angle",
            kpi="within_11_25",
        ),
        # Edge pixels are rare; the positive weight follows the usual MTL practice (0.95/0.05).
        "edges": Task(
            "edges", 1, _binary_loss(19.0), (Metric("f1", True),), headline="f1", kpi="f1"
        ),
        "saliency": Task(
            "saliency",
            1,
            _binary_loss(1.0),
            (Metric("iou", True), Metric("max_f", True)),
            headline="iou",
            kpi="iou",
        ),
    }


def list_tasks() -> list[str]:
    return sorted(_make_tasks(1))


def get_task(name: str, num_classes: int = 1) -> Task:
    """The task record ``name``; ``num_classes`` sets the output channels of ``semseg``."""
    tasks = _make_tasks(num_classes)
    if name not in tasks:
        raise KeyError(f"unknown task {name!r}; expected one of {sorted(tasks)}")
    return tasks[name]
