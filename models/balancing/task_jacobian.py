"""Task gradients that become the update themselves: no second backward.

:class:`TaskJacobian` records the shared features of every forward, as
:class:`~models.balancing.TaskGramian` does, but cuts the graph there: the heads read a
detached copy. One step then takes each task's gradient through its own head only (with
the gradients of every parameter the head path reaches directly), and the T products
through the trunk (batched on a GPU). From those the trainer gets the Gramian (or the
Jacobian) its method reads, and, once the method has weighed the tasks, every parameter's update
``Σ_t w_t ∇L_t`` (or the method's own direction over the shared space) without
backpropagating ``Σ_t w_t L_t`` again. The cut also makes every parameter's gradient
exact whatever reads the features: a parameter used both before and after them (RCM's
filter banks) gets both parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from models.balancing.task_gradients import (
    FeatureRecorder,
    GradientSpace,
    SharedTrunk,
    _stacked,
    through_trunk,
)

__all__ = ["StepGradients", "TaskJacobian"]


def _added(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _weighted(stacked: Sequence[torch.Tensor], weights: torch.Tensor) -> list[torch.Tensor]:
    """``Σ_t w_t b[t]`` for each (T, *shape) block ``b``: T fused passes over all blocks,
    not one product per parameter."""
    if not stacked:
        return []
    factors = weights.tolist()
    total = torch._foreach_mul([b[0] for b in stacked], factors[0])
    for t in range(1, len(factors)):
        torch._foreach_add_(total, [b[t] for b in stacked], alpha=factors[t])
    return list(total)


@dataclass
class StepGradients:
    """One step's task gradients, each multiplied by the loss ``scale`` they were taken at.

    ``shared`` are the blocks of the space the method reads, (T, *shape) each: the shared
    parameters' full task gradients, or the shared features' gradients through the heads.
    ``direct`` holds, for every trainable parameter, the task gradients that do not pass
    through the features (under ``params``: the whole task gradient), or ``None``.
    """

    space: GradientSpace
    scale: float
    parameters: list[nn.Parameter]
    shared: list[torch.Tensor]
    direct: list[torch.Tensor | None]
    #: Under ``representation``: the trunk's features, whose graph the update still needs.
    features: list[torch.Tensor]
    #: Under ``params``: the shared parameters, in the order of ``shared``.
    shared_params: Sequence[nn.Parameter] = ()

    @property
    def num_tasks(self) -> int:
        return self.shared[0].shape[0]

    def gramian(self) -> torch.Tensor:
        """The unscaled T×T float64 Gramian ``J Jᵀ`` of the shared space."""
        gramian = self.shared[0].new_zeros(self.num_tasks, self.num_tasks, dtype=torch.float64)
        for block in self.shared:
            flat = block.reshape(self.num_tasks, -1).double()
            gramian += flat @ flat.T
        return gramian / self.scale**2

    def jacobian(self) -> torch.Tensor:
        """The unscaled T×N Jacobian of the shared space, in float32 or wider."""
        flat = [b.reshape(self.num_tasks, -1) for b in self.shared]
        jacobian = torch.cat(flat, dim=1)
        dtype = torch.promote_types(jacobian.dtype, torch.float32)
        return jacobian.to(dtype) / self.scale

    def update(
        self, weights: torch.Tensor, direction: torch.Tensor | None = None
    ) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """Each parameter's gradient (at the loss scale) for task weights ``weights`` (T,);
        ``direction`` (N,), unscaled, replaces ``Σ_t w_t J_t`` over the shared space."""
        weights = weights.detach()
        if direction is None:
            shared = _weighted(self.shared, weights)
        else:
            sizes = [b[0].numel() for b in self.shared]
            pieces = (direction * self.scale).split(sizes)
            shared = [
                p.reshape(b.shape[1:]).to(b.dtype) for p, b in zip(pieces, self.shared, strict=True)
            ]
        ids = {id(p): k for k, p in enumerate(self.shared_params)}
        # Under ``params`` a shared parameter's whole gradient is in ``shared`` already.
        pairs = zip(self.parameters, self.direct, strict=True)
        own = [None if id(p) in ids else d for p, d in pairs]
        reached = iter(_weighted([d for d in own if d is not None], weights))
        direct = [None if d is None else next(reached) for d in own]
        if self.space == "params":
            grads = [
                d if id(p) not in ids else shared[ids[id(p)]]
                for p, d in zip(self.parameters, direct, strict=True)
            ]
        else:
            # One backward through the trunk, from the features' combined gradient.
            trunk = torch.autograd.grad(
                self.features, self.parameters, grad_outputs=shared, allow_unused=True
            )
            grads = [_added(t, d) for t, d in zip(trunk, direct, strict=True)]
        return [(p, g) for p, g in zip(self.parameters, grads, strict=True) if g is not None]


class TaskJacobian:
    """Records the shared features on every forward, cut from the heads' graph;
    :meth:`__call__` gives a step's :class:`StepGradients`.

    Once installed, the network's loss no longer reaches the trunk by ``backward``: the
    trainer applies :meth:`StepGradients.update` instead.
    """

    def __init__(self, model: nn.Module, space: GradientSpace) -> None:
        trunk: SharedTrunk = model  # type: ignore[assignment]
        self.space: GradientSpace = space
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        trainable = {id(p) for p in self.parameters}
        self.shared = [p for p in trunk.shared_parameters() if id(p) in trainable]  # type: ignore[attr-defined]
        self._recorder = FeatureRecorder(model, trunk.representation_module(), cut=True)

    def close(self) -> None:
        self._recorder.close()

    def __call__(self, losses: Sequence[torch.Tensor], scale: float = 1.0) -> StepGradients:
        """The task gradients of ``losses`` (T scalars, as computed), each loss multiplied
        by ``scale`` first (fp16's loss scale: small gradients do not underflow)."""
        if not scale > 0:
            raise ValueError(f"the loss scale must be > 0, got {scale}")
        features, leaves = self._recorder.take()
        params = self.parameters
        # Each task through its own head only: the features' and the heads' gradients.
        per_task = [
            torch.autograd.grad(
                loss * scale if scale != 1.0 else loss,
                [*leaves, *params],
                retain_graph=True,
                allow_unused=True,
            )
            for loss in losses
        ]
        at_leaves = [_stacked([g[k] for g in per_task], leaf) for k, leaf in enumerate(leaves)]
        at_leaves = [
            torch.zeros(len(losses), *leaf.shape, dtype=leaf.dtype, device=leaf.device)
            if g is None
            else g
            for g, leaf in zip(at_leaves, leaves, strict=True)
        ]
        n = len(leaves)
        direct = [_stacked([g[n + k] for g in per_task], p) for k, p in enumerate(params)]
        if self.space == "representation":
            return StepGradients(self.space, scale, params, at_leaves, direct, features)
        # The T feature gradients through the trunk.
        through = through_trunk(features, params, at_leaves, retain_graph=False)
        full = [_added(d, t) for d, t in zip(direct, through, strict=True)]
        index = {id(p): k for k, p in enumerate(params)}
        shared = []
        for p in self.shared:
            block = full[index[id(p)]]
            shared.append(block if block is not None else p.new_zeros(len(losses), *p.shape))
        return StepGradients(self.space, scale, params, shared, full, [], self.shared)
