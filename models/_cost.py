"""Inference cost of a multi-task model, with shared computation counted once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models._capabilities import ParameterCounts

__all__ = ["count_gflops", "count_parameters", "task_costs"]


def count_gflops(
    model: nn.Module,
    image_size: int,
    in_channels: int = 3,
    tasks: Sequence[str] | None = None,
) -> float:
    """GFLOPs of one forward pass on one image, predicting ``tasks`` (all) at once."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        shape = (1, in_channels, image_size, image_size)
        x = torch.zeros(shape, dtype=param.dtype, device=param.device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x) if tasks is None else model(x, tasks=tuple(tasks))
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def task_costs(model: nn.Module, image_size: int) -> dict[str, dict[str, float]]:
    """Per task: inference GFLOPs of that task alone, trainable parameters (those that
    would train were the task trained now) and parameters stored for it alone.

    A model's own ``parameter_counts(task)`` wins; otherwise a task stores its
    ``task_parameters`` and trains those plus every shared trainable parameter.
    """
    costs: dict[str, dict[str, float]] = {}
    for task in model.tasks:
        if isinstance(model, ParameterCounts):
            counts = model.parameter_counts(task)
            trainable, stored = counts["trainable"], counts["stored_per_task"]
        else:
            own = list(model.task_parameters(task))
            stored = sum(p.numel() for p in own)
            shared = sum(p.numel() for p in model.shared_parameters() if p.requires_grad)
            trainable = shared + sum(p.numel() for p in own if p.requires_grad)
        costs[task] = {
            "gflops": count_gflops(model, image_size, tasks=(task,)),
            "params_trainable": float(trainable),
            "params_stored": float(stored),
        }
    return costs
