"""Methods that read the whole task Jacobian: GradDrop, MoCo, ExcessMTL.

None of them is a function of the Gramian ``J Jᵀ``: GradDrop keeps or drops each coordinate
by the signs of the task gradients there, MoCo tracks every task's gradient across steps,
ExcessMTL keeps per-coordinate sums of squared gradients. Each returns the shared update
direction itself from :meth:`Balancer.direction`; the weights :meth:`Balancer.weights`
returns in the same step are those the paper applies to the task-private parameters.

The maths are pure functions of tensors; the classes keep the state between steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from models.balancing._base import Balancer, _check_finite
from models.balancing._registry import register_balancer

__all__ = [
    "ExcessMTL",
    "GradDrop",
    "MoCo",
    "excess_mtl_step",
    "graddrop_direction",
    "moco_step",
]

#: MoCo's offset in each gradient's norm, as LibMTL.
_MOCO_EPS = 1e-8
#: ExcessMTL's offset under the square root of the squared-gradient sums, as LibMTL.
_EXCESS_EPS = 1e-7


def graddrop_direction(jacobian: torch.Tensor, uniform: torch.Tensor, leak: float) -> torch.Tensor:
    """GradDrop's update (N,) from the T×N Jacobian and one uniform draw (N,) in [0, 1).

    Each coordinate's positive sign purity is ``P = ½(1 + Σ_t g_t / Σ_t |g_t|)``; where
    ``P > U`` the positive entries are kept, where ``P < U`` the negative ones, and a dropped
    entry still leaks ``leak`` of itself. A coordinate where every gradient is zero has
    ``P = ½`` and adds nothing.
    """
    total, mass = jacobian.sum(0), jacobian.abs().sum(0)
    purity = 0.5 * (1 + total / torch.where(mass > 0, mass, 1))
    keep = ((purity > uniform) & (jacobian > 0)) | ((purity < uniform) & (jacobian < 0))
    return (jacobian * (leak + (1 - leak) * keep.to(jacobian.dtype))).sum(0)


def moco_step(
    jacobian: torch.Tensor,
    losses: torch.Tensor,
    tracked: torch.Tensor,
    lambdas: torch.Tensor,
    beta: float,
    gamma: float,
    rho: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One MoCo step: the tracked gradients ``y`` (T×N) and the task weights ``λ`` (T,).

    Each gradient is rescaled to its loss, ``g_t ← L_t g_t / (‖g_t‖ + 1e-8)``; then
    ``y ← y − β (y − g)`` and ``λ ← softmax(λ − γ (y yᵀ + ρ I) λ)``, β and γ being this
    step's (decayed) step sizes. The update is ``yᵀ λ``.
    """
    norms = jacobian.norm(dim=1, keepdim=True)
    scaled = jacobian / (norms + _MOCO_EPS) * losses.to(jacobian.dtype)[:, None]
    tracked = tracked - beta * (tracked - scaled)
    gramian = (tracked @ tracked.T).double()
    eye = torch.eye(len(lambdas), dtype=torch.float64, device=lambdas.device)
    lambdas = torch.softmax(lambdas - gamma * (gramian + rho * eye) @ lambdas, 0)
    return tracked, lambdas


def excess_mtl_step(
    jacobian: torch.Tensor,
    sums: torch.Tensor,
    reference: torch.Tensor,
    log_weights: torch.Tensor,
    step_size: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ExcessMTL step: the squared-gradient sums (T×N), each task's reference excess
    risk (T,) and the log task weights (T,), the weights being ``T · softmax``.

    A task's excess risk is ``Σ_k g_k² / √(Σ_steps g_k² + 1e-7)``, AdaGrad's estimate of
    how far its loss is from its minimum. The first step a task's risk is positive fixes
    its reference; from the next step on its log weight grows by ``step_size · risk /
    reference`` (LibMTL's multiplicative update renormalised to sum T, in log space so no
    weight underflows to a permanent zero).
    """
    sums = sums + jacobian.square()
    risks = (jacobian.square() / (sums + _EXCESS_EPS).sqrt()).sum(1).double()
    known = reference > 0
    ratio = torch.where(known, risks / torch.where(known, reference, 1), 0.0)
    reference = torch.where(known, reference, risks)
    log_weights = log_weights + step_size * ratio
    return sums, reference, log_weights - log_weights.max()


def _check(method: str, name: str, value: float, ok: bool, expected: str) -> None:
    if not (ok and math.isfinite(value)):
        raise ValueError(f"{method} {name} must be {expected}, got {value}")


class _JacobianMethod(Balancer):
    """A method that forms the shared update from the task Jacobian itself."""

    def direction(self, losses: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        if jacobian.dim() != 2 or jacobian.shape[0] != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__} needs a ({self.num_tasks}, N) Jacobian, "
                f"got shape {tuple(jacobian.shape)}"
            )
        if not jacobian.is_floating_point():
            raise TypeError(f"the task Jacobian must be floating point, got {jacobian.dtype}")
        losses = losses.detach()
        _check_finite(self.tasks, losses, "loss")
        jacobian = jacobian.detach()
        rows = torch.isfinite(jacobian).all(1)
        _check_finite(self.tasks, torch.where(rows, 0.0, math.inf), "gradient")
        if jacobian.device != self.device:
            self.to(jacobian.device)
        update = self.solve(losses, jacobian)
        if not torch.isfinite(update).all():
            raise FloatingPointError(f"{type(self).__name__} gave a non-finite update direction")
        return update.to(jacobian.dtype)

    def solve(self, losses: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        """The update (N,) for this step; may update the method's state."""
        raise NotImplementedError

    def _state_for(self, state: torch.Tensor | None, jacobian: torch.Tensor) -> torch.Tensor:
        """A per-coordinate state (T×N) in the Jacobian's dtype, zeros on the first step."""
        if state is None:
            return torch.zeros_like(jacobian)
        if state.shape != jacobian.shape:
            raise ValueError(
                f"{type(self).__name__} keeps a {tuple(state.shape)} state, but the Jacobian "
                f"is {tuple(jacobian.shape)}: the shared space changed"
            )
        return state.to(jacobian.dtype)


@register_balancer("graddrop")
class GradDrop(_JacobianMethod):
    """Each coordinate keeps the positive or the negative task gradients, drawn by purity.

    The uniform draw is made on the CPU from :attr:`generator` (saved with the state), so a
    seeded run replays whatever the device. The heads are weighted 1.
    """

    def __init__(self, tasks: Sequence[str], leak: float = 0.0) -> None:
        super().__init__(tasks)
        _check("graddrop", "leak", leak, 0 <= leak <= 1, "in [0, 1]")
        self.leak = leak

    def solve(self, losses: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        uniform = torch.rand(
            jacobian.shape[1], generator=self.generator, dtype=jacobian.dtype, device="cpu"
        )
        return graddrop_direction(jacobian, uniform.to(jacobian.device), self.leak)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones(self.num_tasks, device=self.device)


@register_balancer("moco")
class MoCo(_JacobianMethod):
    """Tracked task gradients ``y`` and MGDA-like weights ``λ``, one small step of each per
    training step; the update is ``yᵀ λ`` and the heads are weighted by λ.

    Step sizes decay as ``β / k^beta_sigma`` and ``γ / k^gamma_sigma`` at step ``k``. ``y``
    holds one row per task over every shared coordinate, so it costs T copies of the
    shared parameters' memory.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        beta: float = 0.5,
        beta_sigma: float = 0.5,
        gamma: float = 0.1,
        gamma_sigma: float = 0.5,
        rho: float = 0.0,
    ) -> None:
        super().__init__(tasks)
        _check("moco", "beta", beta, 0 < beta <= 1, "in (0, 1]")
        _check("moco", "gamma", gamma, gamma > 0, "> 0")
        for name, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma)):
            _check("moco", name, value, value >= 0, ">= 0")
        _check("moco", "rho", rho, rho >= 0, ">= 0")
        self.beta, self.beta_sigma = beta, beta_sigma
        self.gamma, self.gamma_sigma, self.rho = gamma, gamma_sigma, rho
        self._step = 0
        self._tracked: torch.Tensor | None = None
        self._lambdas = torch.full(
            (self.num_tasks,), 1 / self.num_tasks, dtype=torch.float64, device=self.device
        )

    def solve(self, losses: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        tracked = self._state_for(self._tracked, jacobian)
        self._step += 1
        self._tracked, self._lambdas = moco_step(
            jacobian,
            losses,
            tracked,
            self._lambdas,
            beta=self.beta / self._step**self.beta_sigma,
            gamma=self.gamma / self._step**self.gamma_sigma,
            rho=self.rho,
        )
        return self._tracked.T @ self._lambdas.to(jacobian.dtype)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self._lambdas.float()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "step": self._step,
            "tracked": self._tracked,
            "lambdas": self._lambdas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._step = int(state["step"])
        self._tracked = self._here(state["tracked"])
        self._lambdas = self._here(state["lambdas"])


@register_balancer("excess_mtl")
class ExcessMTL(_JacobianMethod):
    """Task weights raised by each task's excess risk relative to its first, summing to T;
    the update and the heads are weighted by them.

    The squared-gradient sums hold one row per task over every shared coordinate, so they
    cost T copies of the shared parameters' memory.
    """

    def __init__(self, tasks: Sequence[str], robust_step_size: float = 0.01) -> None:
        super().__init__(tasks)
        _check("excess_mtl", "robust_step_size", robust_step_size, robust_step_size > 0, "> 0")
        self.robust_step_size = robust_step_size
        self._sums: torch.Tensor | None = None
        self._reference = torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)
        self._log_weights = torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)

    def _weights(self) -> torch.Tensor:
        return self.num_tasks * torch.softmax(self._log_weights, 0)

    def solve(self, losses: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        sums = self._state_for(self._sums, jacobian)
        self._sums, self._reference, self._log_weights = excess_mtl_step(
            jacobian, sums, self._reference, self._log_weights, self.robust_step_size
        )
        return jacobian.T @ self._weights().to(jacobian.dtype)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self._weights().float()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "sums": self._sums,
            "reference": self._reference,
            "log_weights": self._log_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._sums = self._here(state["sums"])
        self._reference = self._here(state["reference"])
        self._log_weights = self._here(state["log_weights"])
