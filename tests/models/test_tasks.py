"""Task records: metric names, directions, headline and KPI choices."""

from __future__ import annotations

import pytest
import torch

from models import task_metrics
from models.tasks import HUMAN_PARTS_CLASSES, IGNORE_INDEX, get_task, list_tasks

EXPECTED = {
    "semseg": ({"miou": True, "pixel_acc": True}, "miou", "miou"),
    "human_parts": ({"miou": True}, "miou", "miou"),
    "depth": (
        {
            "rmse": False,
            "abs_rel": False,
            "log_rmse": False,
            "delta1": True,
            "delta2": True,
            "delta3": True,
        },
        "rmse",
        "delta1",
    ),
    "normals": (
        {
            "mean_angle": False,
            "median_angle": False,
            "within_11_25": True,
            "within_22_5": True,
            "within_30": True,
        },
        "mean_angle",
        "within_11_25",
    ),
    "edges": ({"odsf": True}, "odsf", "odsf"),
    "saliency": ({"max_f": True, "iou": True}, "max_f", "max_f"),
    "detection": ({"map": True, "map50": True}, "map", "map"),
}


def test_every_task_is_listed() -> None:
    assert list_tasks() == task_metrics.list_tasks() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metrics_directions_headline_and_kpi(name: str) -> None:
    task = get_task(name, 5)
    directions, headline, kpi = EXPECTED[name]
    assert {m.name: m.higher_is_better for m in task.metrics} == directions
    assert task.headline == headline and task.metrics[0].name == headline
    assert task.kpi == kpi and task.metric(kpi).higher_is_better
    # The record's metrics are the torch-free table's, which results are read with.
    scoring = task_metrics.task_metrics(name)
    assert (task.metrics, task.headline, task.kpi) == (scoring.metrics, scoring.headline, kpi)


def test_human_parts_has_seven_classes_whatever_num_classes() -> None:
    for num_classes in (1, 5, 21):
        assert get_task("human_parts", num_classes).channels == HUMAN_PARTS_CLASSES == 7
    assert get_task("semseg", 21).channels == 21


def test_human_parts_loss_ignores_255() -> None:
    loss = get_task("human_parts").loss
    pred = torch.randn(2, 7, 3, 3)
    target = torch.randint(0, 7, (2, 3, 3))
    target[0] = IGNORE_INDEX
    assert torch.isclose(loss(pred, target), loss(pred[1:], target[1:]))
    assert loss(pred, torch.full_like(target, IGNORE_INDEX)) == 0


def test_unknown_task_and_metric_name_the_choices() -> None:
    with pytest.raises(KeyError, match="human_parts"):
        get_task("nope")
    with pytest.raises(KeyError, match="f1"):
        get_task("edges").metric("f1")
    with pytest.raises(KeyError, match="human_parts"):
        task_metrics.task_metrics("nope")


def test_detection_classes_skip_the_background() -> None:
    assert get_task("detection", 21).channels == 20
