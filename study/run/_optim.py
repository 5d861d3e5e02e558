"""The training recipe's pure parts: the optimiser and the per-step learning-rate schedule.

A trial builds the optimiser from the spec's fixed choices (``optimizer``) and the numbers
its configuration sampled from the search space's ``optim`` section, then steps the
schedule once after every optimiser step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from study.spec import OptimizerSpec, ScheduleSpec

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_schedule",
    "lr_factor",
    "optimizer_hp",
    "schedule_for",
    "steps_per_epoch",
]

#: Each optimiser's class and the hyperparameters it takes.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], frozenset[str]]] = {
    "sgd": (torch.optim.SGD, frozenset({"lr", "weight_decay", "momentum", "nesterov"})),
    "adam": (torch.optim.Adam, frozenset({"lr", "weight_decay", "betas", "eps"})),
    "adamw": (torch.optim.AdamW, frozenset({"lr", "weight_decay", "betas", "eps"})),
}

SCHEDULES: tuple[str, ...] = ("constant", "poly", "cosine", "step")

#: What a trial uses when the search space does not sample it (the platform's defaults).
_DEFAULT_LR = 1e-3
_DEFAULT_WEIGHT_DECAY = 0.0


def build_optimizer(
    groups: Iterable[dict[str, Any]], name: str, **hp: Any
) -> torch.optim.Optimizer:
    """``name`` (``sgd``, ``adam``, ``adamw``) over parameter ``groups``; ``hp`` are the
    optimiser's keyword arguments (``lr``, ``weight_decay``; ``momentum`` and ``nesterov``
    for SGD; ``betas`` and ``eps`` for Adam and AdamW). A group's own ``lr`` wins over
    ``hp["lr"]``. Any other name or hyperparameter is a ``ValueError``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    cls, accepted = OPTIMIZERS[name]
    unknown = sorted(set(hp) - accepted)
    if unknown:
        raise ValueError(
            f"optimizer {name!r} takes no {unknown}; it takes some of {sorted(accepted)}"
        )
    if "betas" in hp:
        hp["betas"] = tuple(hp["betas"])
    return cls(list(groups), **hp)


def optimizer_hp(optimizer: OptimizerSpec, searched: Mapping[str, Any]) -> dict[str, Any]:
    """The optimiser's keyword arguments: the spec's fixed choices for ``optimizer.name``,
    overridden by what the trial sampled from the space's ``optim`` section."""
    hp: dict[str, Any] = {"lr": _DEFAULT_LR, "weight_decay": _DEFAULT_WEIGHT_DECAY}
    if optimizer.name == "sgd":
        hp |= {"momentum": optimizer.momentum, "nesterov": optimizer.nesterov}
    else:
        hp["betas"] = tuple(optimizer.betas)
    hp |= {k: float(v) for k, v in searched.items()}
    return hp


def steps_per_epoch(samples: int, batch_size: int, world: int = 1) -> int:
    """Optimiser steps in one epoch of ``samples``: one worker keeps a last short batch,
    several drop a last global batch too small to share (``worker_batches``)."""
    if world == 1:
        return max(1, math.ceil(samples / batch_size))
    return max(1, samples // (batch_size * world))


def lr_factor(
    step: int,
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    steps_per_epoch: int = 1,
    power: float = 0.9,
    step_epochs: int = 1,
    gamma: float = 0.1,
) -> float:
    """The learning rate at optimiser step ``step`` (from 0) as a fraction of the base rate.

    With ``W = warmup_steps``, ``T = total_steps`` and ``p = (step - W) / (T - W)``
    (clamped to [0, 1]: the decay starts where warm-up ends):

    * warm-up, ``step < W``: ``(step + 1) / W``, linear up to the base rate;
    * ``constant``: ``1``;
    * ``poly``: ``(1 - p) ** power`` (0.9 in the segmentation papers);
    * ``cosine``: ``(1 + cos(π p)) / 2``;
    * ``step``: ``gamma ** floor(step / (step_epochs * steps_per_epoch))``, counted from
      the first step.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    if name == "constant":
        return 1.0
    if name == "poly":
        return (1.0 - progress) ** power
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "step":
        return gamma ** (step // (step_epochs * steps_per_epoch))
    raise ValueError(f"unknown schedule {name!r}; expected one of {list(SCHEDULES)}")


def build_schedule(
    optimizer: torch.optim.Optimizer,
    name: str,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    warmup_steps: int = 0,
    power: float = 0.9,
    step_epochs: int = 1,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A schedule stepped once per optimiser step over ``epochs × steps_per_epoch`` steps
    (formulas in :func:`lr_factor`). Warm-up is ``warmup_steps``, or ``warmup_epochs``
    (rounded to whole steps); each group's rate is its own base rate times the factor.

    Build it on the torch optimizer DeepSpeed was given: DeepSpeed's wrappers share its
    parameter groups, so the rates it sets are the ones stepped.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; expected one of {list(SCHEDULES)}")
    warmup = warmup_steps or round(warmup_epochs * steps_per_epoch)
    total = steps_per_epoch * epochs

    def factor(step: int) -> float:
        return lr_factor(step, name, total, warmup, steps_per_epoch, power, step_epochs, gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def schedule_for(
    optimizer: torch.optim.Optimizer, schedule: ScheduleSpec, steps: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`build_schedule` with the spec's ``schedule``."""
    return build_schedule(
        optimizer,
        schedule.name,
        steps,
        epochs,
        warmup_epochs=schedule.warmup_epochs,
        warmup_steps=schedule.warmup_steps,
        power=schedule.power,
        step_epochs=schedule.step_epochs,
        gamma=schedule.gamma,
    )
