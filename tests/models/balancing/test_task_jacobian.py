"""The task gradients that become the update: equal to backpropagating ``Σ w_t L_t``, and
their Gramian equal to the per-task gradients', for every architecture and both spaces."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from models import create_model, get_task, list_models
from models.balancing import TaskJacobian

TASKS = ("semseg", "depth", "normals")
SMALL: dict[str, dict[str, Any]] = {
    "hard_sharing": {"head_channels": 8},
    "vmm": {"backbone": "efficientnet_b0", "neck_channels": 16},
    "rcm_resnet": {"train_bank": True},
    "vit_sharing": {"depth": 1, "image_size": 32},
}


def test_every_architecture_is_listed_here() -> None:
    assert set(list_models()) == set(SMALL)


def _setup(name: str) -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = create_model(name, TASKS, num_classes=4, **SMALL[name])
    if name == "vit_sharing":  # every task on its own path: the base task and two sub-tasks
        model.train()
    images = torch.randn(2, 3, 32, 32)
    targets = {
        "semseg": torch.randint(0, 4, (2, 32, 32)),
        "depth": torch.rand(2, 1, 32, 32) + 0.1,
        "normals": torch.nn.functional.normalize(torch.randn(2, 3, 32, 32), dim=1),
    }
    return model, images, targets


def _losses(model: torch.nn.Module, images: torch.Tensor, targets: dict) -> list[torch.Tensor]:
    torch.manual_seed(1)  # the same gates for both copies of a sampled-gate model
    preds = model(images)
    return [get_task(t, 4).loss(preds[t], targets[t]) for t in TASKS]


def _per_task(model: torch.nn.Module, losses: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        pairs = zip(grads, params, strict=True)
        rows.append([torch.zeros_like(p) if g is None else g for g, p in pairs])
    return rows


@pytest.mark.parametrize("space", ["params", "representation"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_update_is_the_weighted_backward(name: str, space: str) -> None:
    model, images, targets = _setup(name)
    reference = copy.deepcopy(model)
    weights = torch.tensor([0.7, 1.9, 0.4])
    jacobian = TaskJacobian(model, space)
    grads = jacobian(_losses(model, images, targets), scale=8.0)
    update = dict((id(p), g) for p, g in grads.update(weights))

    losses = _losses(reference, images, targets)
    rows = _per_task(reference, losses)
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == len(rows[0])
    combined = [
        sum(w * row[k] for w, row in zip(weights.tolist(), rows, strict=True)) * 8.0
        for k in range(len(params))
    ]
    largest = max(float(c.abs().max()) for c in combined)
    for param, expected in zip(params, combined, strict=True):
        got = update.get(id(param), torch.zeros_like(param))
        # Deep trunks sum in another order: float32 noise at each tensor's scale, and at
        # the network's for gradients that vanish in theory (a bias before a batch norm).
        atol = 5e-3 * float(expected.abs().max()) + 1e-5 * largest
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=atol)
    if space == "params":
        ids = {id(p) for p in model.shared_parameters()}
        shared = [k for k, p in enumerate(params) if id(p) in ids]
        flat = torch.stack([torch.cat([row[k].reshape(-1) for k in shared]) for row in rows])
        torch.testing.assert_close(grads.jacobian(), flat, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(
            grads.gramian(), flat.double() @ flat.double().T, rtol=1e-4, atol=1e-9
        )
    jacobian.close()


def test_a_direction_replaces_the_shared_combination() -> None:
    model, images, targets = _setup("hard_sharing")
    jacobian = TaskJacobian(model, "params")
    grads = jacobian(_losses(model, images, targets))
    direction = torch.randn(grads.jacobian().shape[1])
    update = dict((id(p), g) for p, g in grads.update(torch.ones(3), direction))
    shared = list(model.shared_parameters())
    got = torch.cat([update[id(p)].reshape(-1) for p in shared])
    torch.testing.assert_close(got, direction)
    # The heads keep their weighted task gradients.
    head = next(iter(model.task_parameters("depth")))
    assert update[id(head)].abs().sum() > 0


def test_no_recording_without_gradients() -> None:
    model, images, _ = _setup("hard_sharing")
    jacobian = TaskJacobian(model, "params")
    with torch.no_grad():
        model(images)
    with pytest.raises(RuntimeError, match="no forward pass"):
        jacobian([torch.zeros(())] * 3)
