"""The balancer interface: task losses (and what else a method asks for) in, one scalar out."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from models.balancing._catalogue import GradientSource

__all__ = ["Balancer", "GradientSource"]


class Balancer:
    """Weighs the vector of task losses into one loss to backpropagate.

    :meth:`weights` returns effective weights ``w`` (T,) such that the network's update
    direction is ``Σ_t w_t ∇L_t``: they never carry gradient to the network, so the
    update is ``backward(Σ_t w_t L_t)`` and whatever engine owns the gradients
    (DeepSpeed, ZeRO, data parallelism) keeps owning them. A method with parameters of
    its own (UW's log-variances, IMTL-L's scales) returns weights that depend on them and
    trains them with its own small optimiser in :meth:`step`.
    """

    # A built-in method's are set from its catalogue entry when it registers.
    paper: ClassVar[str] = ""
    gradients: ClassVar[GradientSource] = "none"
    uses_kpis: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str]) -> None:
        if not tasks:
            raise ValueError("a balancer needs at least one task")
        self.tasks = tuple(tasks)
        #: Where the method's state and parameters live: the device of the last losses.
        self.device = torch.device("cpu")
        self.last_weights = torch.ones(len(self.tasks), device="cpu")  # for reports
        self._params: list[nn.Parameter] = []
        self._optimizer: torch.optim.Optimizer | None = None
        self._optimizer_kw: dict[str, float] = {}
        # Random methods (RLW, PCGrad's order) draw from here; saved with the state.
        self.generator = torch.Generator().manual_seed(0)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def weights(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        """Effective task weights (T,) for this step's detached losses (and Gramian)."""
        raise NotImplementedError

    def penalty(self) -> torch.Tensor | float:
        """A term on the method's own parameters only (UW's Σ log σ), added to the loss."""
        return 0.0

    def combine(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        """The scalar to backpropagate; ``losses`` is the (T,) vector of task losses.

        ``gramian`` is the T×T matrix ``J Jᵀ`` of the task gradients, given when the
        method's :attr:`gradients` is not ``"none"``.
        """
        weights = self.weigh(losses, gramian)
        return (weights.to(losses.dtype) * losses).sum() + self.penalty()

    def weigh(self, losses: torch.Tensor, gramian: torch.Tensor | None = None) -> torch.Tensor:
        """This step's checked effective weights (T,), as :meth:`combine` applies them.

        They carry gradient to the method's own parameters only; a trainer that forms the
        update from the task gradients itself applies ``weights.detach()`` to them.
        """
        _check_finite(self.tasks, losses.detach(), "loss")
        if losses.device != self.device:
            self.to(losses.device)
        if self.gradients != "none":
            if gramian is None:
                raise ValueError(f"{type(self).__name__} needs the Gramian of the task gradients")
            gramian = gramian.detach().double()
            _check_finite(self.tasks, gramian.diagonal(), "gradient")
        weights = self.weights(losses.detach(), gramian)
        _check_finite(self.tasks, weights.detach(), "weight")
        self.last_weights = weights.detach().float().cpu()
        return weights

    def direction(self, losses: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
        """For a method whose :attr:`gradients` is ``"jacobian"``: the update direction
        (N,) of the shared space from this step's detached losses (T,) and the T×N task
        Jacobian, in the Jacobian's dtype and on its device.

        The trainer calls it before :meth:`combine` (with ``J Jᵀ``) in the same step; the
        weights :meth:`weights` then returns are what the task-private parameters (the
        heads) are weighted by, and what reports show.
        """
        raise NotImplementedError(f"{type(self).__name__} does not read the task Jacobian")

    def step(self) -> None:
        """After the network's optimiser step: train the method's own parameters, if any."""
        if self._optimizer is None:
            return
        _average_gradients(self._params)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)

    def parameters(self) -> list[nn.Parameter]:
        return list(self._params)

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        """Called after every training epoch with the epoch's mean task losses (T,)."""

    def achievements(self) -> torch.Tensor | None:
        """Each task's achievement (KPI ÷ single-task potential), for methods that keep one."""
        return None

    def update_kpis(self, kpis: Mapping[str, float]) -> None:
        """Called after every evaluation with each task's validation KPI, in (0, 1]."""

    def _learn(self, *params: nn.Parameter, lr: float, weight_decay: float = 0.0) -> None:
        """Give the method parameters that its own Adam trains in :meth:`step`."""
        if lr <= 0:
            raise ValueError(f"{type(self).__name__} lr must be > 0, got {lr}")
        self._params = list(params)
        self._optimizer_kw = {"lr": lr, "weight_decay": weight_decay}
        self._optimizer = torch.optim.Adam(self._params, **self._optimizer_kw)

    def to(self, device: torch.device | str) -> Balancer:
        """Move the method's state, parameters and their optimiser's moments to ``device``.

        :meth:`combine` calls it whenever the losses arrive on another device, so a method
        follows the network (CPU, GPU, and back after a checkpoint) by itself.
        """
        device = torch.device(device)
        params = self._params
        moved = {id(p): nn.Parameter(p.detach().to(device)) for p in params}
        for name, value in list(vars(self).items()):
            if name in ("last_weights", "_params"):  # reports read the weights on the CPU
                continue
            if id(value) in moved:
                setattr(self, name, moved[id(value)])
            elif isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value):
                setattr(self, name, [v.to(device) for v in value])
            elif isinstance(value, Balancer):
                value.to(device)
        if self._optimizer is not None:
            # A new optimiser over the moved parameters; loading the old one's state casts
            # its moments onto their device.
            saved = self._optimizer.state_dict()
            self._params = [moved[id(p)] for p in params]
            self._optimizer = torch.optim.Adam(self._params, **self._optimizer_kw)
            self._optimizer.load_state_dict(saved)
        self.device = device
        return self

    def _here(self, saved: torch.Tensor | None) -> torch.Tensor | None:
        """A restored state tensor, on the device this method's state lives on now."""
        return None if saved is None else saved.detach().to(self.device).clone()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "last_weights": self.last_weights,
            "generator": self.generator.get_state(),
        }
        if self._optimizer is not None:
            state["params"] = [p.detach().clone() for p in self._params]
            state["optimizer"] = self._optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` onto :attr:`device`, wherever it was saved."""
        self.last_weights = state["last_weights"].float().cpu()
        # A generator's state is a CPU byte tensor, even from a checkpoint mapped to a GPU.
        self.generator.set_state(state["generator"].cpu())
        if self._optimizer is not None:
            with torch.no_grad():
                for param, saved in zip(self._params, state["params"], strict=True):
                    param.copy_(saved)
            # A copy: an optimiser must not share moment tensors with the one saved.
            self._optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))


def _check_finite(tasks: Sequence[str], values: torch.Tensor, what: str) -> None:
    finite = torch.isfinite(values)
    if not finite.all():
        bad = [t for t, ok in zip(tasks, finite.tolist(), strict=True) if not ok]
        raise FloatingPointError(f"non-finite {what} for task(s) {bad}")


def _average_gradients(params: Sequence[nn.Parameter]) -> None:
    # Each rank saw its own batch; identical method parameters need identical updates.
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= dist.get_world_size()
