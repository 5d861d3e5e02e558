"""Task records: what a task predicts, how it is trained, and how it is scored.

Tensor conventions (B = batch, H×W = image size):

| task        | prediction           | target                          | invalid / ignored |
|-------------|----------------------|---------------------------------|-------------------|
| semseg      | logits (B, K, H, W)  | class ids, int64 (B, H, W)      | 255               |
| human_parts | logits (B, 7, H, W)  | part ids 0-6, int64 (B, H, W)   | 255               |
| depth       | metres (B, 1, H, W)  | metres, float (B, 1, H, W)      | 0                 |
| normals     | unit (B, 3, H, W)    | unit vectors, float (B, 3, H, W)| all-zero vector   |
| edges       | logits (B, 1, H, W)  | {0, 1}, float (B, 1, H, W)      | 255               |
| saliency    | logits (B, 1, H, W)  | {0, 1}, float (B, 1, H, W)      | 255               |
| detection   | (B, A, 8 + C): boxes, anchors, logits | (B, N, 5) xyxy + class | class −1 rows |

Each task's metrics, their direction, headline and KPI are :mod:`models.task_metrics`'s,
which imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.task_metrics import Metric, TaskMetrics, task_metrics

__all__ = [
    "HUMAN_PARTS_CLASSES",
    "IGNORE_INDEX",
    "Metric",
    "Task",
    "activate",
    "get_task",
    "list_tasks",
]

IGNORE_INDEX = 255
# PASCAL-Context human parts (Chen et al. 2014, as used by ASTMT): background and
# head, torso, upper arms, lower arms, upper legs, lower legs.
HUMAN_PARTS_CLASSES = 7

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Task(TaskMetrics):
    """One task: its metrics with their direction, headline and KPI
    (:class:`models.task_metrics.TaskMetrics`), and its output channels and loss."""

    channels: int
    loss: LossFn


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


def _task(name: str, channels: int, loss: LossFn) -> Task:
    scoring = task_metrics(name)
    return Task(
        name=name,
        metrics=scoring.metrics,
        headline=scoring.headline,
        kpi=scoring.kpi,
        channels=channels,
        loss=loss,
    )


def _make_tasks(num_classes: int) -> dict[str, Task]:
    return {
        "semseg": _task("semseg", num_classes, _semseg_loss),
        "depth": _task("depth", 1, _depth_loss),
        "normals": _task("normals", 3, _normals_loss),
        # Edge pixels are rare; the positive weight follows the usual MTL practice (0.95/0.05).
        "edges": _task("edges", 1, _binary_loss(19.0)),
        "saliency": _task("saliency", 1, _binary_loss(1.0)),
        "human_parts": _task("human_parts", HUMAN_PARTS_CLASSES, _semseg_loss),
        # Semantic class 0 is the background, which a detector does not predict.
        "detection": _task("detection", max(num_classes - 1, 1), _detection_loss),
    }


def _detection_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Imported on use: torchvision's ops import torch._dynamo, seconds no other task needs.
    from models.detection import detection_loss

    return detection_loss(pred, target)


def activate(task: str, pred: torch.Tensor) -> torch.Tensor:
    """A head's raw output as the prediction the task record describes: unit normals,
    positive depth; every other task predicts logits (or detections) as they are."""
    if task == "normals":
        return F.normalize(pred, dim=1)
    if task == "depth":
        return F.softplus(pred)
    return pred


def list_tasks() -> list[str]:
    return sorted(_make_tasks(1))


def get_task(name: str, num_classes: int = 1) -> Task:
    """The task record ``name``.

    ``num_classes`` sets the output channels of ``semseg`` (and ``detection``'s classes,
    ``num_classes − 1`` without the background); ``human_parts`` always has
    :data:`HUMAN_PARTS_CLASSES` (7) channels, whatever ``num_classes`` says, since its label
    set is fixed and a study's ``num_classes`` describes the semantic classes.
    """
    tasks = _make_tasks(num_classes)
    if name not in tasks:
        raise KeyError(f"unknown task {name!r}; expected one of {sorted(tasks)}")
    return tasks[name]
