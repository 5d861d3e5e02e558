"""Loss-level methods: weights from the losses alone, no task gradients."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from models.balancing._base import Balancer, _average_gradients
from models.balancing._registry import register_balancer

__all__ = [
    "FAMO",
    "DynamicWeightAverage",
    "EqualWeights",
    "FixedWeights",
    "GeometricLossStrategy",
    "MeanWeights",
    "RandomLossWeighting",
    "SmoothTchebycheff",
    "UncertaintyWeighting",
    "geometric_mean_weights",
    "labelled_tasks",
]

#: FAMO's ε in D_t = L_t − min L_t + ε (the official code's value; min L_t is taken as 0).
_FAMO_EPS = 1e-8


@register_balancer("ew")
class EqualWeights(Balancer):
    """Every task weighs 1."""

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones_like(losses)


@register_balancer("mean")
class MeanWeights(Balancer):
    """Every task weighs 1/T: the mean of the task losses (torchjd's ``Mean``)."""

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return torch.full_like(losses, 1 / self.num_tasks)


@register_balancer("dwa")
class DynamicWeightAverage(Balancer):
    """w_t = T·softmax(r_t / temperature), r_t the ratio of the last two epochs' losses."""

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ValueError(f"dwa temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.epoch_losses: list[torch.Tensor] = []
        self._weights = torch.ones(self.num_tasks, device=self.device)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self._weights.to(losses.device)

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        # Two epochs of history are all the rule reads.
        mean = mean_losses.detach().double().to(self.device)
        self.epoch_losses = [*self.epoch_losses[-1:], mean]
        if len(self.epoch_losses) == 2:
            previous, last = self.epoch_losses
            ratio = last / previous.clamp_min(1e-12)
            # A task without labels in either epoch has no ratio; it counts as steady.
            ratio = torch.where(torch.isfinite(ratio), ratio, 1.0)
            self._weights = (self.num_tasks * torch.softmax(ratio / self.temperature, 0)).float()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch_losses": self.epoch_losses, "weights": self._weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch_losses = [self._here(t) for t in state["epoch_losses"]]
        self._weights = self._here(state["weights"])


def labelled_tasks(method: str, tasks: Sequence[str], losses: torch.Tensor) -> torch.Tensor:
    """Mask (T,) of the tasks with a loss > 0; a task with loss 0 was not labelled this batch.

    Methods that take the logarithm of the losses call this; a negative loss has no logarithm
    and is refused with a ValueError naming the task(s).
    """
    negative = losses < 0
    if negative.any():
        bad = [t for t, neg in zip(tasks, negative.tolist(), strict=True) if neg]
        raise ValueError(f"{method} needs losses >= 0 (it takes their log); negative for {bad}")
    return losses > 0


def geometric_mean_weights(
    losses: torch.Tensor, exponents: torch.Tensor, method: str, tasks: Sequence[str]
) -> torch.Tensor:
    """Effective weights of the weighted geometric mean ``G = Π_t L_t^{a_t}``.

    ``∇G = G · Σ_t a_t ∇L_t / L_t``, so ``w_t = G·a_t/L_t`` (G detached). A task with loss 0
    (unlabelled in this batch) is left out: its exponent becomes 0 and the others are
    renormalised to sum 1, so it gets weight 0 and never a NaN or inf. All tasks unlabelled:
    all weights 0. Computed in float64, returned in the dtype of ``losses``.
    """
    labelled = labelled_tasks(method, tasks, losses)
    loss = losses.detach().double()
    a = torch.where(labelled, exponents.to(loss), 0.0)
    a = a / a.sum().clamp_min(torch.finfo(torch.float64).tiny)
    safe = torch.where(labelled, loss, 1.0)
    product = torch.exp((a * safe.log()).sum())
    return (product * a / safe).to(losses.dtype)


def _parse_fixed(weights: str | Sequence[float], tasks: Sequence[str]) -> torch.Tensor:
    expected = f"fixed weights must be {len(tasks)} numbers >= 0, not all 0, in task order {tasks}"
    if isinstance(weights, str):
        if not weights.strip():
            return torch.ones(len(tasks), device="cpu")
        try:
            values = [float(part) for part in weights.split(",")]
        except ValueError:
            raise ValueError(f"{expected}, comma-separated; got {weights!r}") from None
    else:
        values = [float(v) for v in weights]
    if (
        len(values) != len(tasks)
        or not all(math.isfinite(v) and v >= 0 for v in values)
        or not any(v > 0 for v in values)
    ):
        raise ValueError(f"{expected}; got {weights!r}")
    return torch.tensor(values, device="cpu")  # moved to the losses' device when used


@register_balancer("fixed")
class FixedWeights(Balancer):
    """Hand-set weights ``w_t``, constant through training: the loss is ``Σ_t w_t L_t``.

    ``weights`` is a comma-separated list in task order (``"1.0,0.5,2"``), or a sequence of
    numbers; empty means all 1 (equal weighting).
    """

    def __init__(self, tasks: Sequence[str], weights: str | Sequence[float] = "") -> None:
        super().__init__(tasks)
        self.fixed_weights = _parse_fixed(weights, self.tasks)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return self.fixed_weights.to(losses.device, losses.dtype)


@register_balancer("rlw")
class RandomLossWeighting(Balancer):
    """``w = softmax(ε)``, ``ε ~ N(0, I)`` drawn afresh every step from :attr:`generator`.

    The weights sum to 1 (as in the paper; not rescaled to sum T).
    """

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        # Drawn where the (saved, seeded) generator lives, so the draws do not depend on
        # the device the network trains on.
        draw = torch.randn(
            self.num_tasks, generator=self.generator, dtype=torch.float64, device="cpu"
        )
        return torch.softmax(draw, 0).to(losses.device, losses.dtype)


@register_balancer("gls")
class GeometricLossStrategy(Balancer):
    """The loss is the geometric mean ``G = (Π_t L_t)^{1/T}``: effective ``w_t = G/(T·L_t)``.

    A task with loss 0 (unlabelled in this batch) gets weight 0 and is left out of the
    product, T then counting only the labelled tasks.
    """

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        return geometric_mean_weights(losses, torch.ones_like(losses), "gls", self.tasks)


@register_balancer("uw")
class UncertaintyWeighting(Balancer):
    """Learned log-variances ``s_t`` (init 0): the loss is ``Σ_t ½e^{−s_t} L_t + ½ s_t``.

    Weights ``½e^{−s_t}`` stay attached to ``s`` and :meth:`penalty` is ``½ Σ_t s_t``; the
    method's Adam (``lr``) trains ``s`` in :meth:`step`, whose optimum is ``s_t = log L_t``.
    A task with loss 0 (unlabelled in this batch) is left out of that step's penalty, so
    ``½ s_t`` alone cannot drive its ``s_t`` down and its weight up while it sees no labels.
    """

    def __init__(self, tasks: Sequence[str], lr: float = 1e-2) -> None:
        super().__init__(tasks)
        if not lr > 0:
            raise ValueError(f"uw lr must be > 0, got {lr}")
        self.log_variances = nn.Parameter(torch.zeros(self.num_tasks, device=self.device))
        self._learn(self.log_variances, lr=lr)
        self._labelled = torch.ones(self.num_tasks, dtype=torch.bool, device=self.device)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        self._labelled = losses != 0
        return (0.5 * torch.exp(-self.log_variances)).to(losses.device)

    def penalty(self) -> torch.Tensor:
        return 0.5 * self.log_variances[self._labelled].sum()


@register_balancer("famo")
class FAMO(Balancer):
    """Fast Adaptive Multitask Optimization: logits ``ξ`` (init 0), ``z = softmax(ξ)``.

    With ``D_t = L_t + ε`` (minimum losses taken as 0, ε = 1e-8) the loss is
    ``Σ_t z_t log D_t / c`` with ``c = Σ_t z_t/D_t`` detached, so the effective weights are
    ``w_t = z_t/(c·D_t)`` (they sum to 1 and are returned detached).

    ``ξ`` is updated at the start of each :meth:`weights` call from the previous call's losses:
    ``δ_t = log D_t^prev − log D_t^now``, ``∇_ξ = (diag(z) − z zᵀ) δ``, one Adam step
    (``lr``, ``weight_decay = gamma``, as the official code). The official code re-evaluates
    the same batch after the network's step; here the next step's losses (another batch)
    stand in, which saves a forward pass. :meth:`weights` must therefore be called once per
    training step. Under data parallelism ``∇_ξ`` is averaged over the ranks.

    A task with loss 0 (unlabelled in this batch) gets weight 0 and is left out of ``c``; its
    ``δ_t`` is 0 whenever it is unlabelled in either of the two steps.
    """

    def __init__(self, tasks: Sequence[str], lr: float = 0.025, gamma: float = 0.001) -> None:
        super().__init__(tasks)
        if not lr > 0:
            raise ValueError(f"famo lr must be > 0, got {lr}")
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"famo gamma (weight decay) must be >= 0, got {gamma}")
        self.logits = nn.Parameter(
            torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)
        )
        self._learn(self.logits, lr=lr, weight_decay=gamma)
        self.previous_losses: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        now = losses.detach().double()
        labelled = labelled_tasks("famo", self.tasks, now)
        if self.previous_losses is not None:
            self._update_logits(self.previous_losses, now)
        self.previous_losses = now.clone()
        z = torch.softmax(self.logits.detach(), 0)
        w = torch.where(labelled, z / (now + _FAMO_EPS), 0.0)
        w = w / w.sum().clamp_min(torch.finfo(torch.float64).tiny)
        return w.to(losses.device, losses.dtype)

    def _update_logits(self, before: torch.Tensor, now: torch.Tensor) -> None:
        both = (before > 0) & (now > 0)
        delta = torch.where(both, (before + _FAMO_EPS).log() - (now + _FAMO_EPS).log(), 0.0)
        z = torch.softmax(self.logits.detach(), 0)
        self.logits.grad = z * delta - z * (z @ delta)  # (diag(z) − z zᵀ) δ
        _average_gradients(self._params)
        assert self._optimizer is not None
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_losses": self.previous_losses}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        previous = state["previous_losses"]
        self.previous_losses = self._here(previous)


#: STCH's offset inside the logarithm, as the reference code (it keeps log finite at 0).
_STCH_EPS = 1e-20


@register_balancer("stch")
class SmoothTchebycheff(Balancer):
    """Smooth Tchebycheff scalarisation of the log losses against a nadir point.

    For the first ``warmup_epochs`` epochs the loss is ``Σ_t log L_t`` (``w_t = 1/L_t``);
    during the next epoch the mean losses are recorded as the nadir point ``z``. From then on
    the loss is ``T·μ·log Σ_t exp(u_t/μ)`` with ``u_t = log(L_t/z_t)``, so the effective
    weights are ``w_t = T·softmax(u/μ)_t / L_t``: the task furthest above its nadir leads,
    smoothly (``μ → 0`` is the Tchebycheff max). As LibMTL and the reference code (whose
    ``1e-20`` inside the logarithm is kept), with epochs counted by :meth:`end_epoch`.

    A task with loss 0 (unlabelled in this batch) gets weight 0 and is left out of the
    softmax and of its nadir average.
    """

    def __init__(self, tasks: Sequence[str], mu: float = 1.0, warmup_epochs: int = 4) -> None:
        super().__init__(tasks)
        if not (mu > 0 and math.isfinite(mu)):
            raise ValueError(f"stch mu must be > 0, got {mu}")
        if warmup_epochs < 0 or warmup_epochs != int(warmup_epochs):
            raise ValueError(f"stch warmup_epochs must be an integer >= 0, got {warmup_epochs}")
        self.mu = mu
        self.warmup_epochs = int(warmup_epochs)
        self.epoch = 0
        self._loss_sum = torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)
        self._loss_count = torch.zeros(self.num_tasks, dtype=torch.float64, device=self.device)
        self.nadir: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        labelled = labelled_tasks("stch", self.tasks, losses)
        loss = losses.detach().double()
        if self.epoch <= self.warmup_epochs:
            if self.epoch == self.warmup_epochs:
                self._loss_sum += torch.where(labelled, loss, 0.0)
                self._loss_count += labelled.double()
            w = torch.where(labelled, 1 / (loss + _STCH_EPS), 0.0)
            return w.to(losses.dtype)
        if self.nadir is None:
            # A task never labelled in the nadir epoch has no nadir; it stays at its own loss.
            self.nadir = torch.where(
                self._loss_count > 0, self._loss_sum / self._loss_count.clamp_min(1), 0.0
            )
        nadir = torch.where(self.nadir > 0, self.nadir, loss.clamp_min(_STCH_EPS))
        u = torch.log(loss / nadir + _STCH_EPS)
        soft = torch.softmax(torch.where(labelled, u / self.mu, -math.inf), 0)
        w = torch.where(labelled, self.num_tasks * soft / (loss + _STCH_EPS * nadir), 0.0)
        return w.to(losses.dtype)

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        self.epoch += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "epoch": self.epoch,
            "loss_sum": self._loss_sum,
            "loss_count": self._loss_count,
            "nadir": self.nadir,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state["epoch"])
        self._loss_sum = self._here(state["loss_sum"])
        self._loss_count = self._here(state["loss_count"])
        self.nadir = self._here(state["nadir"])
