"""Gradient-level methods: weights from the Gramian ``G = J Jᵀ`` of the task gradients.

Each wraps a pure function of :mod:`models.balancing.gramian`; the class adds only what
the method keeps between steps (warm starts, EMAs, learned scales).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from models.balancing import gramian as solve
from models.balancing._base import Balancer
from models.balancing._kpi_weighting import AchievementWeighting
from models.balancing._registry import register_balancer

__all__ = [
    "AlignedMTL",
    "CAGrad",
    "CAGradAMTL",
    "DualBalancing",
    "DualProj",
    "GradNorm",
    "IMTL",
    "IMTLG",
    "MGDA",
    "NashMTL",
    "PCGrad",
    "PCGradAMTL",
    "UPGrad",
]


class _GramianMethod(Balancer):
    """A function of the Gramian of the shared parameters' (or features') task gradients."""

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        assert gramian is not None
        return self.solve(gramian).float()

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        """Weights (T,) for this Gramian; may update the method's state."""
        raise NotImplementedError


@register_balancer("mgda")
class MGDA(_GramianMethod):
    """The min-norm point of the convex hull of the task gradients."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.mgda_weights(gramian)


@register_balancer("pcgrad")
class PCGrad(_GramianMethod):
    """Each gradient projected off the ones it conflicts with, in random order; summed."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.pcgrad_weights(gramian, self.generator)


@register_balancer("cagrad")
class CAGrad(_GramianMethod):
    """The update in a ball around the mean gradient that best serves the worst task."""

    def __init__(self, tasks: Sequence[str], c: float = 0.5) -> None:
        super().__init__(tasks)
        if c < 0:
            raise ValueError(f"cagrad c must be >= 0, got {c}")
        self.c = c
        self._warm: torch.Tensor | None = None

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        weights, self._warm = solve.cagrad_weights(gramian, c=self.c, init=self._warm)
        return weights

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "warm": self._warm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._warm = self._here(state["warm"])


@register_balancer("imtl_g")
class IMTLG(_GramianMethod):
    """The update with equal projections on every unit task gradient (closed form)."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.imtl_g_weights(gramian)


@register_balancer("imtl")
class IMTL(_GramianMethod):
    """IMTL-G on the losses scaled by IMTL-L: L_t → e^{s_t} L_t − s_t, s_t learned.

    The network's update is IMTL-G's ``Σ_t α_t ∇(e^{s_t} L_t)``, α from the scaled gradients.
    The scales descend the scaled losses themselves, unweighted by α, as in the paper's
    algorithm and LibMTL: ``∂/∂s_t = e^{s_t} L_t − 1``, which drives ``e^{s_t} L_t`` to 1. A task
    with loss 0 (unlabelled in this batch) is left out of that step, so ``−s_t`` alone cannot
    raise its scale while it sees no labels.
    """

    def __init__(self, tasks: Sequence[str], lr: float = 1e-2) -> None:
        super().__init__(tasks)
        self.log_scales = nn.Parameter(torch.zeros(self.num_tasks, device=self.device))
        self._learn(self.log_scales, lr=lr)
        self._losses = torch.zeros(self.num_tasks, device=self.device)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        assert gramian is not None
        scales = self.log_scales.detach().exp()
        scaled = scales.double()
        alpha = solve.imtl_g_weights(scaled[:, None] * gramian * scaled[None, :]).float()
        self._losses = losses.detach().float()
        return alpha * scales

    def penalty(self) -> torch.Tensor:
        # IMTL-L's objective Σ_t (e^{s_t} L_t − s_t) on the detached losses: it trains the
        # scales only, the network having its gradient from the weights.
        labelled = self._losses != 0
        scaled = self.log_scales.exp() * self._losses - self.log_scales
        return scaled[labelled].sum()


@register_balancer("nash_mtl")
class NashMTL(_GramianMethod):
    """The Nash bargaining solution: (Gα)_t = 1/α_t, solved warm-started each step.

    ``max_norm > 0`` scales α down so the update ``‖Jᵀα‖ = √(αᵀGα)`` is at most ``max_norm``,
    as LibMTL clips the shared parameters' gradient (its default 1). At the solution
    ``αᵀGα = T``, so a clip at 1 always divides α by √T: a fixed rescaling of the learning
    rate. The default, 0, never clips, leaving the step size to the optimiser and its search.
    """

    def __init__(self, tasks: Sequence[str], max_iter: int = 100, max_norm: float = 0.0) -> None:
        super().__init__(tasks)
        if max_iter < 1:
            raise ValueError(f"nash_mtl max_iter must be >= 1, got {max_iter}")
        if not (max_norm >= 0 and math.isfinite(max_norm)):
            raise ValueError(f"nash_mtl max_norm must be >= 0 (0: no clipping), got {max_norm}")
        self.max_iter = max_iter
        self.max_norm = max_norm
        self._warm: torch.Tensor | None = None

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        self._warm = solve.nash_mtl_weights(gramian, init=self._warm, max_iter=self.max_iter)
        if self.max_norm <= 0:
            return self._warm
        norm = float(self._warm @ gramian @ self._warm) ** 0.5
        return self._warm * min(1.0, self.max_norm / norm) if norm > 0 else self._warm

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "warm": self._warm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._warm = self._here(state["warm"])


@register_balancer("aligned_mtl")
class AlignedMTL(_GramianMethod):
    """Task gradients aligned to an orthogonal, equally scaled system, then summed."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.aligned_mtl_weights(gramian)


@register_balancer("upgrad")
class UPGrad(_GramianMethod):
    """Each gradient projected onto the dual cone of all of them, averaged."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.upgrad_weights(gramian)


@register_balancer("dualproj")
class DualProj(_GramianMethod):
    """The mean gradient projected onto the dual cone of the task gradients."""

    def solve(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.dualproj_weights(gramian)


@register_balancer("db_mtl")
class DualBalancing(_GramianMethod):
    """Log losses, each gradient scaled to the largest EMA gradient norm.

    The paper keeps an EMA of the gradients themselves; as a function of the Gramian it
    keeps an EMA of their norms (``β / step^σ``, as the reference code), so the update
    stays a weighted sum of this step's task gradients.

    ``beta_sigma`` defaults to 0.5, a momentum decaying as ``β/√step``: the first steps'
    large, noisy norms are soon forgotten and the scales follow this step's gradients as
    training settles. LibMTL's default is 0, a constant momentum β; ``beta_sigma: 0``
    reproduces it.
    """

    def __init__(self, tasks: Sequence[str], beta: float = 0.9, beta_sigma: float = 0.5) -> None:
        super().__init__(tasks)
        if not 0 <= beta < 1 or beta_sigma < 0:
            raise ValueError(
                f"db_mtl needs 0 <= beta < 1 and beta_sigma >= 0, got {beta}, {beta_sigma}"
            )
        self.beta, self.beta_sigma = beta, beta_sigma
        self._norms = torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)
        self._step = 0

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        assert gramian is not None
        present = losses > 0  # a task absent from the batch has nothing to balance
        inverse = torch.where(present, 1 / losses.double().clamp_min(1e-30), 0.0)
        norms = gramian.diagonal().clamp_min(0).sqrt() * inverse  # ‖∇ log L_t‖
        self._step += 1
        decay = self.beta / self._step**self.beta_sigma
        self._norms = torch.where(present, norms + decay * (self._norms - norms), self._norms)
        tracked = present & (self._norms > 0)
        if not tracked.any():
            return inverse.float()
        scale = torch.where(tracked, self._norms.max() / self._norms.clamp_min(1e-30), 0.0)
        return (scale * inverse).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "norms": self._norms, "step": self._step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._norms, self._step = self._here(state["norms"]), int(state["step"])


@register_balancer("gradnorm")
class GradNorm(Balancer):
    """Weights learned so each task's gradient norm at the last shared layer tracks
    its relative training rate: |w_t‖∇L_t‖ − mean(w‖∇L‖)·r_t^α|, weights summing to T."""

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(tasks)
        if alpha < 0:
            raise ValueError(f"gradnorm alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.task_weights = nn.Parameter(torch.ones(self.num_tasks, device=self.device))
        self._learn(self.task_weights, lr=lr)
        self._initial = torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        assert gramian is not None
        losses = losses.double()
        # L_t(0) is each task's first non-zero loss (a task may be absent at first).
        self._initial = torch.where((self._initial == 0) & (losses > 0), losses, self._initial)
        active = (losses > 0) & (self._initial > 0)
        weights = self.task_weights.detach().double()
        norms = gramian.diagonal().clamp_min(0).sqrt()
        grad = losses.new_zeros(self.num_tasks)
        if active.any():
            ratio = torch.where(active, losses / self._initial.clamp_min(1e-30), 0.0)
            relative = ratio / ratio[active].mean()
            weighted = weights * norms
            target = weighted[active].mean() * relative**self.alpha
            grad = torch.where(active, torch.sign(weighted - target) * norms, 0.0)
        self.task_weights.grad = grad.float()
        return self.task_weights.detach().clone()

    def step(self) -> None:
        super().step()
        with torch.no_grad():
            # Renormalised to sum to T, as the paper, and kept positive.
            clamped = self.task_weights.clamp_min(1e-6)
            self.task_weights.copy_(clamped * self.num_tasks / clamped.sum())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial": self._initial}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._initial = self._here(state["initial"])


class _AchievementSurgery(AchievementWeighting):
    """AMTL's weights on the losses, then gradient surgery on the weighted gradients.

    With AMTL's effective loss weights s, the weighted gradients' Gramian is
    ``diag(s) G diag(s)``; surgery weights c on it make the update ``Σ_t c_t s_t g_t``.
    """

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        assert gramian is not None
        scales = super().weights(losses).double()
        surgery = self.surgery(scales[:, None] * gramian * scales[None, :])
        return (surgery * scales).float()

    def surgery(self, gramian: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_balancer("pcgrad_amtl")
class PCGradAMTL(_AchievementSurgery):
    """AMTL then PCGrad, as the AMTL paper combines them."""

    method = "pcgrad_amtl"

    def surgery(self, gramian: torch.Tensor) -> torch.Tensor:
        return solve.pcgrad_weights(gramian, self.generator)


@register_balancer("cagrad_amtl")
class CAGradAMTL(_AchievementSurgery):
    """AMTL then CAGrad, as the AMTL paper combines them."""

    method = "cagrad_amtl"

    def __init__(
        self,
        tasks: Sequence[str],
        potentials: Mapping[str, float] | None = None,
        margin: float = 0.05,
        gamma: float = 2.0,
        ema: float = 0.1,
        overshoot: str = "clamp",
        c: float = 0.5,
    ) -> None:
        super().__init__(tasks, potentials, margin, gamma, ema, overshoot)
        self._cagrad = CAGrad(tasks, c=c)

    def surgery(self, gramian: torch.Tensor) -> torch.Tensor:
        return self._cagrad.solve(gramian)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cagrad": self._cagrad.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._cagrad.load_state_dict(state["cagrad"])
