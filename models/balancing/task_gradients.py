"""The Gramian of task gradients, from one forward pass and one batched backward.

A model exposes ``shared_parameters()``, ``representation_module()`` (whose outputs are
the shared features the task heads read) and ``last_shared_module()``. The task
gradients are computed in two stages: each task's gradient with respect to the shared
features (through its own head only), then the vector-Jacobian products of the T
feature gradients through the shared trunk (one batched backward on a GPU, T on the
CPU). The heads are never traversed T times for every task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
from torch import nn

from models.balancing._base import GradientSource

__all__ = ["FeatureRecorder", "GradientSpace", "SharedTrunk", "TaskGramian", "through_trunk"]

#: ``params``: gradients of the shared parameters; ``representation``: gradients of the
#: shared features (MGDA-UB style), cheaper when the trunk is big.
GradientSpace = Literal["params", "representation"]


class SharedTrunk(Protocol):
    def shared_parameters(self) -> object: ...
    def representation_module(self) -> nn.Module: ...
    def last_shared_module(self) -> nn.Module: ...


def _stand_ins(output: object, cut: bool) -> tuple[object, list[torch.Tensor], list[torch.Tensor]]:
    """The output with each feature replaced by a stand-in that only the heads read: a
    view (``cut=False``: the graph goes on into the trunk) or a detached leaf.

    A trunk's later stages consume its earlier features too; the gradient with respect
    to the stand-ins is the heads' share alone, so the trunk's is not counted twice.
    """

    def stand_in(t: torch.Tensor) -> torch.Tensor:
        return t.detach().requires_grad_() if cut else t.view_as(t)

    if isinstance(output, torch.Tensor):
        alias = stand_in(output)
        return alias, [output], [alias]
    if isinstance(output, list | tuple):
        aliases = [stand_in(t) for t in output]
        return type(output)(aliases), list(output), aliases
    raise TypeError(f"a representation module must return tensors, got {type(output).__name__}")


class FeatureRecorder:
    """The shared features of a model's latest forward with gradients, each replaced by a
    stand-in for the heads. A model that calls its representation module once per task
    (RCM's task-conditional stem) gives one set of features per call."""

    def __init__(self, model: nn.Module, representation: nn.Module, cut: bool) -> None:
        self.cut = cut
        self.features: list[torch.Tensor] = []
        self.stand_ins: list[torch.Tensor] = []
        self._fresh = True
        self._hooks = [
            model.register_forward_pre_hook(self._start),
            representation.register_forward_hook(self._record),
        ]

    def _start(self, module: nn.Module, inputs: object) -> None:
        self._fresh = True

    def _record(self, module: nn.Module, inputs: object, output: object) -> object:
        if not torch.is_grad_enabled():
            return None
        if self._fresh:
            self.features, self.stand_ins, self._fresh = [], [], False
        output, features, stand_ins = _stand_ins(output, self.cut)
        self.features += features
        self.stand_ins += stand_ins
        return output

    def take(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The recorded features and their stand-ins."""
        if not self.features:
            raise RuntimeError("no forward pass with gradients was recorded")
        return self.features, self.stand_ins

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()


def through_trunk(
    features: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor],
    retain_graph: bool,
    batched: bool | None = None,
) -> list[torch.Tensor | None]:
    """The T task gradients of ``params`` from the features' gradients ``grad_outputs``
    ((T, *feature shape) each): (T, *param shape) per parameter, ``None`` where no
    feature depends on it.

    On a GPU the T products are one batched backward (``is_grads_batched``). On the CPU
    they are a loop of T backwards, which measured faster there: each is one conv-sized
    product a core runs at full speed, with no vmap over the autograd graph. ``batched``
    forces either form.
    """
    num_tasks = grad_outputs[0].shape[0]
    if batched is None:
        batched = features[0].device.type != "cpu"
    if batched:
        return list(
            torch.autograd.grad(
                features,
                params,
                grad_outputs=grad_outputs,
                is_grads_batched=True,
                retain_graph=retain_graph,
                allow_unused=True,
            )
        )
    rows = [
        torch.autograd.grad(
            features,
            params,
            grad_outputs=[g[t] for g in grad_outputs],
            retain_graph=retain_graph or t < num_tasks - 1,
            allow_unused=True,
        )
        for t in range(num_tasks)
    ]
    return [_stacked([r[k] for r in rows], p) for k, p in enumerate(params)]


def _stacked(grads: Sequence[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor | None:
    """(T, *shape) from one gradient per task; ``None`` when no task reaches ``like``."""
    if all(g is None for g in grads):
        return None
    return torch.stack([torch.zeros_like(like) if g is None else g for g in grads])


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
        self._recorder = FeatureRecorder(model, model.representation_module(), cut=False)  # type: ignore[arg-type]

    @property
    def _aliases(self) -> list[torch.Tensor]:
        return self._recorder.stand_ins

    def close(self) -> None:
        self._recorder.close()

    def __call__(self, losses: Sequence[torch.Tensor], scale: float = 1.0) -> torch.Tensor:
        """The T×T float64 Gramian of the task losses' gradients (the graph is kept).

        ``losses`` are the T scalar task losses as computed, not indexed out of a stacked
        vector: a backward from ``stack(losses)[t]`` would also traverse every other head.

        ``scale`` is a loss scale for a half-precision network (fp16's): each loss is
        multiplied by it before differentiating, so that small gradients do not underflow
        to zero on the way back, and the Gramian divided by its square. A gradient that
        overflowed at this scale makes the Gramian non-finite: the caller skips the step.
        """
        if not scale > 0:
            raise ValueError(f"the loss scale must be > 0, got {scale}")
        features, aliases = self._recorder.take()
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
        # Stage 2: the T feature gradients through the trunk.
        param_grads = through_trunk(features, self.parameters, grads, retain_graph=True)
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
