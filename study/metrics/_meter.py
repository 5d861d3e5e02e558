"""The meter base: a fixed-size vector of sums that data-parallel ranks add up."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from models.tasks import Task

__all__ = ["TaskMeter"]

_F64 = torch.float64


def _check_shape(task: str, pred: torch.Tensor, target: torch.Tensor, channels: int) -> None:
    """Dense tasks share (B, C, H, W) predictions and (B, C', H, W) targets."""
    if pred.dim() != 4 or pred.shape[1] != channels:
        raise ValueError(
            f"{task}: prediction must be (B, {channels}, H, W), got {tuple(pred.shape)}"
        )
    if target.shape[0] != pred.shape[0] or target.shape[-2:] != pred.shape[-2:]:
        raise ValueError(
            f"{task}: target {tuple(target.shape)} does not match prediction {tuple(pred.shape)}"
        )


def _safe_div(num: float, den: float, undefined: float) -> float:
    return num / den if den > 0 else undefined


class TaskMeter(ABC):
    """Accumulates one task's metrics over batches as a fixed-size float64 vector."""

    def __init__(self, task: Task) -> None:
        self.task = task
        # Fixed length, so a rank that saw no batch still takes part in the reduction. On
        # the CPU until the first batch says where the data lives (update moves it there).
        self._sums = torch.zeros(self._state_size(), dtype=_F64, device="cpu")

    @abstractmethod
    def _state_size(self) -> int: ...

    @abstractmethod
    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """This batch's contribution to the state, a float64 vector on ``pred``'s device."""

    @abstractmethod
    def _metrics(self, sums: list[float]) -> dict[str, float]: ...

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one batch in; shapes and invalid encodings as in :mod:`models.tasks`."""
        pred = pred.detach()
        target = target.detach()
        batch = self._batch_sums(pred, target)
        # Accumulate where the batch lives (no host sync per batch); MPS has no float64.
        device = batch.device if batch.device.type != "mps" else torch.device("cpu")
        self._sums = self._sums.to(device) + batch.to(device)

    def compute(self) -> dict[str, float]:
        """Exactly the metric names of ``task.metrics``."""
        values = self._metrics(self._sums.cpu().tolist())
        return {m.name: float(values[m.name]) for m in self.task.metrics}

    def state(self) -> torch.Tensor:
        """A copy of every accumulated sum and count (1-D float64), for ``all_reduce(SUM)``."""
        return self._sums.clone()

    def load_state(self, state: torch.Tensor) -> None:
        """Replace the accumulated sums, e.g. with the all-reduced ``state()`` of every rank."""
        if state.dim() != 1 or state.numel() != self._sums.numel():
            raise ValueError(
                f"{self.task.name}: state must be 1-D with {self._sums.numel()} values, "
                f"got shape {tuple(state.shape)}"
            )
        # Onto the device the sums live on now (a collective may have used another).
        self._sums = state.detach().to(device=self._sums.device, dtype=_F64).clone()

    def reset(self) -> None:
        self._sums = torch.zeros_like(self._sums)
