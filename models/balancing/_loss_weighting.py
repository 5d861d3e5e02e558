"""Loss-level methods: weights from the losses alone, no task gradients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from models.balancing._base import Balancer
from models.balancing._registry import register_balancer

__all__ = ["DynamicWeightAverage", "EqualWeights"]


@register_balancer("ew")
class EqualWeights(Balancer):
    """Every task weighs 1."""

    paper = "equal weighting (sum of task losses)"

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones_like(losses)


@register_balancer("dwa")
class DynamicWeightAverage(Balancer):
    """w_t = T·softmax(r_t / temperature), r_t the ratio of the last two epochs' losses."""

    paper = "Liu, Johns, Davison. End-to-End Multi-Task Learning with Attention. CVPR 2019"

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ValueError(f"dwa temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.epoch_losses: list[torch.Tensor] = []
        self._weights = torch.ones(self.num_tasks)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self._weights.to(losses.device)

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        # Two epochs of history are all the rule reads.
        self.epoch_losses = [*self.epoch_losses[-1:], mean_losses.detach().cpu().double()]
        if len(self.epoch_losses) == 2:
            previous, last = self.epoch_losses
            ratio = last / previous.clamp_min(1e-12)
            self._weights = (self.num_tasks * torch.softmax(ratio / self.temperature, 0)).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch_losses": self.epoch_losses, "weights": self._weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch_losses = list(state["epoch_losses"])
        self._weights = state["weights"]
