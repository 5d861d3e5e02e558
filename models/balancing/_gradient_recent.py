"""Gradient-level methods from LibMTL and torchjd: FairGrad, ConFIG, GradVac, MoDo, SDMGrad.

Each wraps a pure function of :mod:`models.balancing.gramian`, as the methods of
:mod:`models.balancing._gradient_weighting` do; the class keeps the state a method carries
between steps (GradVac's cosine targets, MoDo's and SDMGrad's task weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from models.balancing import gramian as solve
from models.balancing._gradient_weighting import _GramianMethod
from models.balancing._registry import register_balancer

__all__ = ["ConFIG", "FairGrad", "GradVac", "MoDo", "SDMGrad"]


def _check(method: str, name: str, value: float, ok: bool, expected: str) -> None:
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{method} {name} must be {expected}, got {value}")


@register_balancer("fairgrad")
class FairGrad(_GramianMethod):
    """The α-fair allocation: each task's utility ⟨g_t, d⟩ = w_t^{−1/α}."""

    def __init__(self, tasks: Sequence[str], alpha: float = 1.0) -> None:
        super().__init__(tasks)
        _check("fairgrad", "alpha", alpha, alpha >= 0, ">= 0")
        self.alpha = alpha

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.fairgrad_weights(gramian, alpha=self.alpha)


@register_balancer("config")
class ConFIG(_GramianMethod):
    """The direction with equal cosine to every task gradient, scaled to their summed length."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.config_weights(gramian)


@register_balancer("gradvac")
class GradVac(_GramianMethod):
    """Each gradient pulled towards its EMA cosine target with every other, then summed."""

    def __init__(self, tasks: Sequence[str], beta: float = 0.5) -> None:
        super().__init__(tasks)
        _check("gradvac", "beta", beta, 0 <= beta <= 1, "in [0, 1]")
        self.beta = beta
        self._targets = torch.zeros(
            self.num_tasks, self.num_tasks, dtype=torch.float64, device=self.device
        )

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        weights, self._targets = solve.gradvac_weights(
            gramian, self._targets, self.generator, beta=self.beta
        )
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "targets": self._targets}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._targets = self._here(state["targets"])


class _SimplexState(_GramianMethod):
    """A method whose task weights on the simplex carry over from step to step."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)
        self._simplex = torch.full(
            (self.num_tasks,), 1 / self.num_tasks, dtype=torch.float64, device=self.device
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "simplex": self._simplex}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._simplex = self._here(state["simplex"])


@register_balancer("modo")
class MoDo(_SimplexState):
    """One projected gradient step of the task weights per step, on MGDA's objective."""

    def __init__(self, tasks: Sequence[str], gamma: float = 1e-3, rho: float = 0.1) -> None:
        super().__init__(tasks)
        _check("modo", "gamma", gamma, gamma > 0, "> 0")
        _check("modo", "rho", rho, rho >= 0, ">= 0")
        self.gamma, self.rho = gamma, rho

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        self._simplex = solve.modo_weights(gramian, self._simplex, self.gamma, self.rho)
        return self._simplex


@register_balancer("sdmgrad")
class SDMGrad(_SimplexState):
    """MGDA's weights by a few projected steps, pulled towards the mean gradient by λ."""

    def __init__(self, tasks: Sequence[str], lamda: float = 0.3, n_iter: int = 20) -> None:
        super().__init__(tasks)
        _check("sdmgrad", "lamda", lamda, lamda >= 0, ">= 0")
        _check("sdmgrad", "n_iter", n_iter, n_iter >= 1 and n_iter == int(n_iter), ">= 1")
        self.lamda, self.n_iter = lamda, int(n_iter)

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        weights, self._simplex = solve.sdmgrad_weights(
            gramian, self._simplex, lamda=self.lamda, n_iter=self.n_iter
        )
        return weights
