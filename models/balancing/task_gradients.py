"""The Gramian of task gradients, from one forward pass and one batched backward.

A model exposes ``shared_parameters()``, ``representation_module()`` (whose outputs are
the shared features the task heads read) and ``last_shared_module()``. The task
gradients are computed in two stages: each task's gradient with respect to the shared
features (through its own head only), then one batched vector-Jacobian product of the
T feature gradients through the shared trunk. The heads are never traversed T times
for every task, and the trunk is traversed once, batched over the T tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
from torch import nn

from models.balancing._base import GradientSource

__all__ = ["GradientSpace", "SharedTrunk", "TaskGramian"]

#: ``params``: gradients of the shared parameters; ``representation``: gradients of the
#: shared features (MGDA-UB style), cheaper when the trunk is big.
GradientSpace = Literal["params", "representation"]


class SharedTrunk(Protocol):
    def shared_parameters(self) -> object: ...
    def representation_module(self) -> nn.Module: ...
    def last_shared_module(self) -> nn.Module: ...


def _aliased(output: object) -> tuple[object, list[torch.Tensor], list[torch.Tensor]]:
    """The output with each feature replaced by a view that only the heads read.

    A trunk's later stages consume its earlier features too; the gradient with respect
    to the aliases is the heads' share alone, so the trunk's is not counted twice.
    """
    if isinstance(output, torch.Tensor):
        alias = output.view_as(output)
        return alias, [output], [alias]
    if isinstance(output, list | tuple):
        aliases = [t.view_as(t) for t in output]
        return type(output)(aliases), list(output), aliases
    raise TypeError(f"a representation module must return tensors, got {type(output).__name__}")


class TaskGramian:
    """Records the shared features on every forward; :meth:`__call__` gives ``J Jᵀ``.

    ``source`` is what the balancer asks for (:attr:`Balancer.gradients`):
    ``"shared"`` reads ``space``; ``"last_shared"`` always uses the parameters of the
    last shared layer (GradNorm's gradient norms).
    """

    def __init__(self, model: SharedTrunk, source: GradientSource, space: GradientSpace) -> None:
        if source == "none":
            raise ValueError("this balancing method needs no task gradients")
        self.space: GradientSpace = "params" if source == "last_shared" else space
        if source == "last_shared":
            self.parameters = [p for p in model.last_shared_module().parameters()]
        else:
            self.parameters = [p for p in model.shared_parameters()]  # type: ignore[attr-defined]
        self.parameters = [p for p in self.parameters if p.requires_grad]
        self._features: list[torch.Tensor] = []
        self._aliases: list[torch.Tensor] = []
        self._hook = model.representation_module().register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: object, output: object) -> object:
        if not torch.is_grad_enabled():
            return None
        output, self._features, self._aliases = _aliased(output)
        return output

    def close(self) -> None:
        self._hook.remove()

    def __call__(self, losses: Sequence[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        """The T×T float64 Gramian of the task losses' gradients (the graph is kept).

        ``losses`` are the T scalar task losses as computed, not indexed out of a stacked
        vector: a backward from ``stack(losses)[t]`` would also traverse every other head.

        ``scale`` is a loss scale for a half-precision network (fp16's): each loss is
        multiplied by it before differentiating, so that small gradients do not underflow
        to zero on the way back, and the Gramian divided by its square. A gradient that
        overflowed at this scale makes the Gramian non-finite: the caller skips the step.
        """
        if not self._features:
            raise RuntimeError("no forward pass with gradients was recorded")
        if not scale > 0:
            raise ValueError(f"the loss scale must be > 0, got {scale}")
        features, aliases = self._features, self._aliases
        num_tasks = len(losses)
        # Stage 1: one backward per task through its own head only.
        per_task = [
            torch.autograd.grad(
                losses[t] * scale if scale != 1.0 else losses[t],
                aliases,
                retain_graph=True,
                allow_unused=True,
            )
            for t in range(num_tasks)
        ]
        grads = [
            torch.stack([_or_zeros(g[k], aliases[k]) for g in per_task])
            for k in range(len(aliases))
        ]
        if self.space == "representation":
            return _gramian(grads) / scale**2
        # Stage 2: the T feature gradients through the trunk, as one batched backward.
        param_grads = torch.autograd.grad(
            features,
            self.parameters,
            grad_outputs=grads,
            is_grads_batched=True,
            retain_graph=True,
            allow_unused=True,
        )
        blocks = [
            _or_zeros(g, p.expand(num_tasks, *p.shape))
            for g, p in zip(param_grads, self.parameters, strict=True)
        ]
        return _gramian(blocks) / scale**2


def _or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _gramian(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    num_tasks = blocks[0].shape[0]
    gramian = torch.zeros(num_tasks, num_tasks, dtype=torch.float64, device=blocks[0].device)
    for block in blocks:
        flat = block.reshape(num_tasks, -1).double()
        gramian += flat @ flat.T
    return gramian
