"""torchjd's own training step on the project's model, for ``bench balancers
--compare-torchjd``: ``mtl_backward`` (the Jacobian of the shared parameters, through the
features) and ``jac_to_grad`` (its aggregator) on the trial's network, outside DeepSpeed."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

__all__ = ["AGGREGATORS", "has_torchjd", "torchjd_step"]

#: The project's method and the torchjd aggregator that computes the same update.
AGGREGATORS = {"mgda": "MGDA", "upgrad": "UPGrad"}


def has_torchjd() -> bool:
    try:
        import torchjd  # noqa: F401
    except ImportError:
        return False
    return True


def torchjd_step(
    model: nn.Module,
    method: str,
    loss_of: Callable[[Mapping[str, torch.Tensor]], list[torch.Tensor]],
    lr: float = 1e-3,
) -> Callable[[torch.Tensor], None]:
    """One optimiser step of ``model`` under torchjd's aggregator for ``method``; the
    shared features are the ones the project's task gradients read."""
    from torchjd import aggregation
    from torchjd.autojac import jac_to_grad, mtl_backward

    aggregator = getattr(aggregation, AGGREGATORS[method])()
    shared = [p for p in model.shared_parameters() if p.requires_grad]  # type: ignore[operator]
    ids = {id(p) for p in shared}
    tasks = list(model.tasks)  # type: ignore[arg-type]
    heads = [[p for p in model.task_parameters(t) if p.requires_grad] for t in tasks]  # type: ignore[operator]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    recorded: list[torch.Tensor] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        recorded[:] = [output] if isinstance(output, torch.Tensor) else list(output)  # type: ignore[arg-type]

    model.representation_module().register_forward_hook(record)  # type: ignore[operator]
    assert all(id(p) not in ids for group in heads for p in group)

    def step(images: torch.Tensor) -> None:
        losses = loss_of(model(images))
        # The trunk's later features are made from its earlier ones: keep the graph.
        mtl_backward(
            losses, features=recorded, tasks_params=heads, shared_params=shared, retain_graph=True
        )
        jac_to_grad(shared, aggregator)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
