"""What a trial's model costs at inference: GFLOPs (against one model per task) and
parameters, whole and per task, as the trials table records them."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from models import count_gflops, count_parameters, create_model, task_costs
from study.spec import StudySpec

__all__ = ["ModelCosts", "model_costs"]


@dataclass(frozen=True)
class ModelCosts:
    """What a model costs to run and to store, whole and per task."""

    gflops: float
    #: The compute a multi-task model saves: the GFLOPs of one model per task, summed.
    single_task_gflops: float
    params: int
    #: Per task: ``gflops``, ``params_trainable``, ``params_stored``.
    per_task: dict[str, dict[str, float]]

    def report(self) -> dict[str, float]:
        """The whole model's costs as a trial reports them each epoch."""
        return {
            "gflops": self.gflops,
            "gflops_single_task_sum": self.single_task_gflops,
            "gflops_ratio": self.gflops / self.single_task_gflops,
            "params": self.params,
        }


def model_costs(
    model: nn.Module,
    spec: StudySpec,
    architecture: str,
    model_kw: Mapping[str, Any],
    tasks: Sequence[str],
) -> ModelCosts:
    """The costs of ``model`` (``architecture`` built from ``model_kw``) on ``spec``'s
    images, against one model of that architecture per task."""
    size = spec.dataset.image_size
    single = sum(
        _single_task_gflops(
            architecture, name, spec.dataset.num_classes, size, tuple(sorted(model_kw.items()))
        )
        for name in tasks
    )
    return ModelCosts(
        gflops=count_gflops(model, size),
        single_task_gflops=single,
        params=count_parameters(model),
        per_task=task_costs(model, size),
    )


@functools.lru_cache(maxsize=32)
def _single_task_gflops(
    architecture: str,
    task: str,
    num_classes: int,
    image_size: int,
    model_kw: tuple[tuple[str, Any], ...],
) -> float:
    model = create_model(architecture, (task,), num_classes=num_classes, **dict(model_kw))
    return count_gflops(model, image_size)
