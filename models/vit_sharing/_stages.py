"""Staged training of :class:`~models.vit_sharing.ViTSharing`: which parameters a step
trains, its penalty, and its optimizer groups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from models.vit_sharing._gates import TaskDeltas
    from models.vit_sharing._model import ViTSharing

__all__ = ["STEPS", "optimizer_groups", "penalty", "set_stage"]

#: Training steps: the base task alone, then per sub-task gates (1), masked deltas (2),
#: masked deltas with the delta-activation penalty (3).
STEPS: tuple[str, ...] = ("base", "gates", "masked", "delta_act")


def set_stage(model: ViTSharing, task: str, step: str) -> None:
    """Freeze everything but what ``task`` trains in ``step``; fix or release its masks."""
    if task not in model.tasks:
        raise KeyError(f"unknown task {task!r}; the model has {list(model.tasks)}")
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {STEPS}")
    if (step == "base") != (task == model.base_task):
        role = "the base task" if task == model.base_task else "a sub-task"
        raise ValueError(f"step {step!r} does not apply to {task!r}, {role}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: Iterator[nn.Parameter]
    if step == "base":
        trainable = chain(model.encoder.parameters(), model.decoders[task].parameters())
    else:
        deltas: TaskDeltas = model.deltas[task]  # type: ignore[assignment]
        for gated in deltas.gated():
            if step == "gates":
                gated.release_mask()
            elif not gated.is_masked():
                gated.fix_mask()
        trainable = chain(deltas.delta_parameters(), model.decoders[task].parameters())
        if step == "gates":
            trainable = chain(trainable, deltas.gate_parameters())
    for p in trainable:
        p.requires_grad_(True)


def penalty(model: ViTSharing, tasks: Sequence[str]) -> torch.Tensor:
    """The penalties of ``tasks`` in the model's stage (see ``ViTSharing.penalty``)."""
    total = torch.zeros((), device=model.encoder.cls_token.device)
    for task in tasks:
        if task == model.base_task:
            continue
        if model.stage is None:
            step = "gates"  # joint training: every sub-task's gates train
        elif model.stage[0] == task:
            step = model.stage[1]
        else:
            continue
        if step == "gates":
            total = total + model.l0_lambda[task] * model.l0_penalty(task)
        elif step == "delta_act":
            l1 = model.delta_l1(task)
            total = total + sum(model.delta_l1_weight[p] * v for p, v in l1.items())
    return total


def optimizer_groups(model: ViTSharing, lr: float) -> list[dict[str, object]]:
    """Trainable parameters; the gates' log-α at ``gate_lr`` (when given), undecayed.

    Adam moves a log-α by about its learning rate per step whatever ``λ`` is, so a gate
    opened at log-α 5 needs some 5/lr steps to close: a short study needs a larger
    ``gate_lr``.  Weight decay would pull every log-α towards 0, the edge of the mask.
    """
    gates = {id(p) for deltas in model.deltas.values() for p in deltas.gate_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    gate_lr = lr if model.gate_lr is None else model.gate_lr
    gated = [p for p in trainable if id(p) in gates]
    groups: list[dict[str, object]] = [
        {"params": [p for p in trainable if id(p) not in gates], "lr": lr},
        {"params": gated, "lr": gate_lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
