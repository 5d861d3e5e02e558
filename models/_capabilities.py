"""What a registered architecture must offer, and the optional capabilities it may declare.

Every model implements :class:`MultiTaskModel`. The trial runner and the spec checks look
for the others with ``isinstance`` (the protocols are runtime-checkable), so a new
architecture gains a feature by implementing its methods, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = [
    "ComputeReport",
    "IncrementalTasks",
    "InitialisedFromData",
    "MultiTaskModel",
    "OptimizerGroups",
    "ParameterCounts",
    "StagedTraining",
    "TemporalPenalty",
]


@runtime_checkable
class MultiTaskModel(Protocol):
    """Every architecture: ``forward(x, tasks=None)`` gives ``{task: prediction}`` for the
    tasks asked (all by default; costs and single-task stages ask for one); gradient-level
    balancers read the shared trunk, and cost counting each task's own parameters."""

    tasks: Sequence[str]

    def forward(
        self, x: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]: ...
    def shared_parameters(self) -> Iterator[nn.Parameter]: ...
    def task_parameters(self, task: str) -> Iterator[nn.Parameter]: ...
    def representation_module(self) -> nn.Module: ...
    def last_shared_module(self) -> nn.Module: ...


@runtime_checkable
class InitialisedFromData(Protocol):
    """Initialised from one seeded training batch before training (RCM's response
    initialisation takes a PCA of it)."""

    def initialise_from_data(self, images: torch.Tensor) -> None: ...


@runtime_checkable
class OptimizerGroups(Protocol):
    """Parameter groups with their own learning rates; without it, one group at ``lr``."""

    def optimizer_groups(self, lr: float) -> list[dict[str, object]]: ...


@runtime_checkable
class ParameterCounts(Protocol):
    """A task's trainable and stored parameter counts, where ``task_parameters`` and
    ``shared_parameters`` do not tell them (frozen shared banks)."""

    def parameter_counts(self, task: str) -> dict[str, int]: ...


@runtime_checkable
class IncrementalTasks(Protocol):
    """Tasks added one after another (``incremental: true``) without changing the outputs
    of those already trained, unless the shared bank trains (``train_bank``)."""

    train_bank: bool

    def add_task(self, name: str, channels: int | None = None) -> None: ...
    def freeze_except(self, task: str) -> None: ...


@runtime_checkable
class StagedTraining(Protocol):
    """Staged training (a spec's ``stages``): each stage trains one task in one step, and
    adds the step's penalties (sparsity) to the loss. ``base_task`` trains in step
    ``base``; the others start from it."""

    base_task: str

    def set_stage(self, task: str, step: str) -> None: ...
    def penalty(self, tasks: Sequence[str] | None = None) -> torch.Tensor: ...


@runtime_checkable
class TemporalPenalty(Protocol):
    """A penalty on the change of activations between neighbouring video frames; the
    trial feeds neighbouring frames only when ``temporal`` is true."""

    @property
    def temporal(self) -> bool: ...

    def temporal_penalty(
        self, frames: torch.Tensor, neighbours: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> torch.Tensor: ...


@runtime_checkable
class ComputeReport(Protocol):
    """What one task's inference computes with sharing taken into account, per layer."""

    def compute_report(
        self, x: torch.Tensor, neighbours: torch.Tensor | None = None
    ) -> dict[str, dict[str, float]]: ...
