"""KPI-driven methods: weights from each task's validation KPI (in (0, 1]), not its losses."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from models.balancing._base import Balancer, _check_finite
from models.balancing._loss_weighting import geometric_mean_weights
from models.balancing._registry import register_balancer

__all__ = [
    "OVERSHOOT",
    "AchievementSumWeighting",
    "AchievementWeighting",
    "DynamicTaskPrioritization",
]

#: AMTL's treatment of a task past its target: no weight from its shortfall, or the
#: reference code's squared (rebounding) shortfall.
OVERSHOOT = ("clamp", "rebound")


def _kpi_vector(
    method: str, tasks: Sequence[str], kpis: Mapping[str, float], device: torch.device
) -> torch.Tensor:
    """The KPIs (T,) in task order, float64 on ``device``; every task must have a finite one."""
    missing = [t for t in tasks if t not in kpis]
    if missing:
        raise ValueError(f"{method} needs a validation KPI for every task; missing for {missing}")
    values = torch.tensor([float(kpis[t]) for t in tasks], dtype=torch.float64, device=device)
    _check_finite(tasks, values, "KPI")
    return values


@register_balancer("dtp")
class DynamicTaskPrioritization(Balancer):
    """``w_t = −(1 − κ̄_t)^γ · log κ̄_t``, κ̄_t the smoothed validation KPI clamped to [1e-6, 1].

    κ̄ is an EMA of each task's KPI, ``κ̄ ← kpi_ema·new + (1 − kpi_ema)·κ̄`` (the first value
    as is): the paper's moving average, with the reference code's momentum 0.1 as default.
    ``kpi_ema = 1`` weighs the latest KPI alone. Harder tasks (lower KPI) weigh more. Before
    any KPI arrives every weight is 1. A task at κ̄ = 1 weighs 0, as the formula says; if every
    task does, all weights fall back to 1. The loss is the weighted sum ``Σ_t w_t L_t``.
    """

    def __init__(self, tasks: Sequence[str], gamma: float = 0.5, kpi_ema: float = 0.1) -> None:
        super().__init__(tasks)
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"dtp gamma must be >= 0, got {gamma}")
        if not 0 < kpi_ema <= 1:
            raise ValueError(f"dtp kpi_ema must be in (0, 1] (1: the latest KPI), got {kpi_ema}")
        self.gamma = gamma
        self.kpi_ema = kpi_ema
        self.kpis: torch.Tensor | None = None

    def update_kpis(self, kpis: Mapping[str, float]) -> None:
        new = _kpi_vector("dtp", self.tasks, kpis, self.device)
        self.kpis = (
            new if self.kpis is None else self.kpi_ema * new + (1 - self.kpi_ema) * self.kpis
        )

    def priorities(self) -> torch.Tensor:
        """The weights (T,), float64 on :attr:`device`."""
        if self.kpis is None:
            return torch.ones(self.num_tasks, dtype=torch.float64, device=self.device)
        kappa = self.kpis.clamp(1e-6, 1.0)
        w = (1.0 - kappa).pow(self.gamma) * torch.log(1.0 / kappa)
        return w if (w > 0).any() else torch.ones_like(w)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self.priorities().to(losses.device, losses.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "kpis": self.kpis}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kpis = self._here(state["kpis"])


@register_balancer("amtl")
class AchievementWeighting(Balancer):
    """Achievement-based weights and a weighted geometric-mean loss.

    κ_t is an EMA of task t's validation KPI (``κ ← ema·new + (1 − ema)·κ``, the first value
    as is), p_t its single-task potential, m the margin:
    ``w = softmax_t[max(0, 1 − κ_t/(p_t(1 + m)))^γ]`` (uniform 1/T before any KPI). The loss
    is ``G = Π_t L_t^{w_t}``, so the effective weights are ``G·w_t/L_t``. A task with loss 0
    (unlabelled in this batch) gets weight 0: its w_t is set to 0 and the rest renormalised to
    sum 1 before the product is formed.

    ``overshoot`` says what a task past its target ``p_t(1 + m)`` gets. ``"clamp"`` (default):
    a shortfall of 0, the least weight, as the paper's focal term ``(1 − a)^γ`` means for an
    achievement ``a ≤ 1``; a task that has passed its target is the last one to need more.
    ``"rebound"``: ``|1 − a|^γ``, the reference code's behaviour (it squares a negative base),
    so the further a task overshoots the more weight it gains again.

    The potentials (task → KPI in (0, 1]) come from the trial, not from the search space.
    """

    #: The name in messages; subclasses registered under another name override it.
    method: ClassVar[str] = "amtl"

    def __init__(
        self,
        tasks: Sequence[str],
        potentials: Mapping[str, float] | None = None,
        margin: float = 0.05,
        gamma: float = 2.0,
        ema: float = 0.1,
        overshoot: str = "clamp",
    ) -> None:
        super().__init__(tasks)
        name = self.method
        if overshoot not in OVERSHOOT:
            raise ValueError(f"{name} overshoot must be one of {OVERSHOOT}, got {overshoot!r}")
        missing = [t for t in self.tasks if potentials is None or t not in potentials]
        if missing:
            raise ValueError(
                f"{name} needs each task's potential (its single-task KPI); missing for "
                f"{missing}: give them in the spec's `potentials` or run single-task trials "
                "into the results store"
            )
        assert potentials is not None
        values = [float(potentials[t]) for t in self.tasks]
        if not all(0 < v <= 1 for v in values):
            raise ValueError(f"{name} potentials must be in (0, 1], got {dict(potentials)}")
        if not (margin >= 0 and math.isfinite(margin)):
            raise ValueError(f"{name} margin must be >= 0, got {margin}")
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"{name} gamma must be >= 0, got {gamma}")
        if not 0 < ema <= 1:
            raise ValueError(f"{name} ema must be in (0, 1], got {ema}")
        self.potentials = torch.tensor(values, dtype=torch.float64, device=self.device)
        self.margin = margin
        self.gamma = gamma
        self.ema = ema
        self.overshoot = overshoot
        self.kpis: torch.Tensor | None = None

    def update_kpis(self, kpis: Mapping[str, float]) -> None:
        new = _kpi_vector(self.method, self.tasks, kpis, self.device)
        self.kpis = new if self.kpis is None else self.ema * new + (1 - self.ema) * self.kpis

    def achievements(self) -> torch.Tensor | None:
        """The smoothed KPIs over the potentials (T,), once a KPI has been seen."""
        return None if self.kpis is None else self.kpis / self.potentials

    def achievement_weights(self) -> torch.Tensor:
        """The softmax weights w (T,), summing to 1; float64 on :attr:`device`."""
        if self.kpis is None:
            return torch.full(
                (self.num_tasks,), 1 / self.num_tasks, dtype=torch.float64, device=self.device
            )
        shortfall = 1 - self.kpis / (self.potentials * (1 + self.margin))
        shortfall = shortfall.clamp_min(0) if self.overshoot == "clamp" else shortfall.abs()
        return torch.softmax(shortfall.pow(self.gamma), 0)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        exponents = self.achievement_weights().to(losses.device)
        return geometric_mean_weights(losses, exponents, self.method, self.tasks)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "kpis": self.kpis}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.kpis = self._here(state["kpis"])


@register_balancer("amtl_sum")
class AchievementSumWeighting(AchievementWeighting):
    """AMTL's achievement weights w on the arithmetic sum ``Σ_t w_t L_t`` (effective = w).

    A task with loss 0 keeps its w (its term is 0 anyway); the others are not renormalised.
    """

    method: ClassVar[str] = "amtl_sum"

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self.achievement_weights().to(losses.device, losses.dtype)
