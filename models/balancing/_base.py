"""The balancer interface: task losses in, one scalar to backpropagate out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

__all__ = ["Balancer"]


class Balancer:
    """Weighs the vector of task losses into one loss.

    Weights are detached, so the update is ``backward(Σ_t w_t L_t)`` and whatever
    engine owns the gradients (DeepSpeed, ZeRO, data parallelism) keeps owning them.
    """

    paper: ClassVar[str] = ""

    def __init__(self, tasks: Sequence[str]) -> None:
        if not tasks:
            raise ValueError("a balancer needs at least one task")
        self.tasks = tuple(tasks)
        self.last_weights = torch.ones(len(self.tasks))

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Detached task weights (T,) for this step's losses."""
        raise NotImplementedError

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        """The scalar to backpropagate; ``losses`` is the (T,) vector of task losses."""
        if not torch.isfinite(losses).all():
            finite = torch.isfinite(losses.detach()).tolist()
            bad = [t for t, ok in zip(self.tasks, finite, strict=True) if not ok]
            raise FloatingPointError(f"non-finite loss for task(s) {bad}")
        weights = self.weights(losses.detach()).to(losses.dtype)
        self.last_weights = weights.detach().cpu()
        return (weights * losses).sum()

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        """Called after every training epoch with the epoch's mean task losses (T,)."""

    def state_dict(self) -> dict[str, Any]:
        return {"last_weights": self.last_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_weights = state["last_weights"]
