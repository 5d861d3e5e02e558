"""A trial's numerics on its device: the GPU switches, and what fp16's loss scaling asks
of the parts of a step that DeepSpeed does not own (a balancer's own parameters)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from models import balancing
from study.run._engine import all_reduced, side_backward
from study.spec import TOKEN_ARCHITECTURES, StudySpec

__all__ = [
    "gpu_switches",
    "balanced_loss",
    "balanced_update",
    "drop_grads",
    "unscaled_grads",
    "uses_channels_last",
]


def uses_channels_last(spec: StudySpec, architecture: str, device: torch.device) -> bool:
    """Whether this trial's model and inputs go channels-last: as the spec says, by
    default on a GPU; never for a transformer on tokens."""
    if architecture in TOKEN_ARCHITECTURES:
        return False
    if spec.channels_last is None:
        return device.type == "cuda"
    return spec.channels_last


def gpu_switches(spec: StudySpec, architecture: str, device: torch.device) -> bool:
    """Set cuDNN's autotuner on a GPU as the spec says; whether the trial's model and
    inputs go channels-last."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = spec.cudnn_benchmark
    return uses_channels_last(spec, architecture, device)


def balanced_loss(
    balancer: balancing.Balancer,
    task_gramian: balancing.TaskGramian | None,
    preds: object,
    task_losses: Sequence[torch.Tensor],
    scale: float = 1.0,
    fp16: bool = False,
) -> torch.Tensor:
    """The loss to backpropagate: the balancer's combination of the task losses, with
    their gradients' Gramian (the mean over ranks) when it asks for one.

    Under ``fp16`` (``scale`` is the engine's loss scale, ``preds`` the forward's outputs) a
    task gradient that overflowed makes the Gramian non-finite; the loss is then NaN,
    so that DeepSpeed's own overflow check skips the step on every rank and lowers the
    scale, as for an overflow in its backward. The balancer never sees such a Gramian.
    """
    losses = torch.stack(list(task_losses))
    if task_gramian is None:
        return balancer.combine(losses)
    with side_backward(preds):
        # Every rank must weigh the tasks alike: the mean of the per-rank Gramians.
        gramian = all_reduced(task_gramian(task_losses, scale), mean=True)
    if fp16 and not bool(gramian.isfinite().all()):
        return losses.sum() * torch.nan
    return balancer.combine(losses, gramian)


def balanced_update(
    balancer: balancing.Balancer,
    task_jacobian: balancing.TaskJacobian,
    preds: object,
    task_losses: Sequence[torch.Tensor],
    scale: float = 1.0,
    fp16: bool = False,
) -> torch.Tensor:
    """A scalar whose backward gives every parameter of the network its balanced update,
    from the task gradients the method reads, with no second pass through the network.

    The scalar stands for ``Σ_p ⟨p, g_p⟩ / scale`` for the update ``g_p`` (at fp16's loss
    ``scale``): ``engine.backward`` of it hands each parameter its update, and DeepSpeed
    keeps owning the gradients (its hooks, ZeRO's partitions, loss scaling, reduction
    over data-parallel workers). The method's own parameters get their gradients here.
    Under ``fp16`` a task gradient that overflowed makes the scalar NaN, so that
    DeepSpeed skips the step on every rank and lowers the scale.
    """
    losses = torch.stack([loss.detach() for loss in task_losses])
    with side_backward(preds):
        grads = task_jacobian(task_losses, scale)
        # Every rank must weigh the tasks alike: the mean of the per-rank Gramians.
        gramian = all_reduced(grads.gramian(), mean=True)
        if fp16 and not bool(gramian.isfinite().all()):
            return sum(p.float().sum() for p in task_jacobian.parameters) * torch.nan
        if balancer.device != losses.device:
            balancer.to(losses.device)
        direction = None
        if balancer.gradients == "jacobian":
            jacobian = all_reduced(grads.jacobian(), mean=True)
            direction = balancer.direction(losses, jacobian)
        weights = balancer.weigh(losses, gramian)
        _own_gradients(balancer, weights, losses)
        update = grads.update(weights, direction)
    params, given = zip(*update, strict=True)
    return _GivenGradients.apply((list(given), scale), *params)


class _GivenGradients(torch.autograd.Function):
    """A zero whose backward gives each parameter ``grad_output · g / scale``, as the
    backward of ``Σ_p ⟨p, g_p⟩ / scale`` would, without a product per parameter: the
    update reaches DeepSpeed's gradient hooks as any backward's gradients do."""

    @staticmethod
    def forward(
        ctx: Any, given: tuple[list[torch.Tensor], float], *params: torch.Tensor
    ) -> torch.Tensor:
        ctx.grads, ctx.scale = given
        return params[0].new_zeros((), dtype=torch.float32)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grads, factor = ctx.grads, grad_output / ctx.scale
        del ctx.grads  # the update is handed over once
        if factor.device.type == "cpu" and float(factor) == 1.0:
            return (None, *grads)
        return (None, *(g * factor.to(g.dtype) for g in grads))


def _own_gradients(
    balancer: balancing.Balancer, weights: torch.Tensor, losses: torch.Tensor
) -> None:
    """What backpropagating ``Σ w_t L_t`` plus the penalty adds to the method's own
    parameters (UW's log-variances, IMTL's scales), unscaled."""
    own = balancer.parameters()
    if not own:
        return
    total = balancer.penalty()
    if weights.requires_grad:
        total = total + (weights.to(losses.dtype) * losses).sum()
    if not (isinstance(total, torch.Tensor) and total.requires_grad):
        return
    grads = torch.autograd.grad(total, own, allow_unused=True)
    for param, grad in zip(own, grads, strict=True):
        if grad is not None:
            param.grad = grad if param.grad is None else param.grad + grad


@contextlib.contextmanager
def unscaled_grads(params: Sequence[nn.Parameter], scale: float) -> Iterator[None]:
    """What a backward inside adds to ``params``' gradients, divided by ``scale``.

    ``engine.backward`` multiplies the loss by fp16's loss scale and unscales only the
    network's gradients; a balancer's own parameters (UW's log-variances, FAMO's logits)
    would otherwise step on gradients ``scale`` times too large. A gradient set before
    the backward (GradNorm sets its own) is kept as it was.
    """
    if scale == 1.0 or not params:
        yield
        return
    before = [None if p.grad is None else p.grad.clone() for p in params]
    yield
    for param, old in zip(params, before, strict=True):
        if param.grad is None:
            continue
        if old is None:
            param.grad = param.grad / scale
        else:
            param.grad = old + (param.grad - old) / scale


def drop_grads(params: Sequence[nn.Parameter]) -> None:
    """Forget ``params``' gradients: the step they were for was skipped."""
    for param in params:
        param.grad = None
