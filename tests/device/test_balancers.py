"""Every balancing method, its Gramian solvers and the task Gramian on the stand-in device."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._pytree import tree_map

from models.balancing import Balancer, TaskGramian, create, defaults, list_methods
from models.balancing import gramian as solve

TASKS = ("a", "b", "c")


def _create(method: str) -> Balancer:
    hp = {"potentials": dict.fromkeys(TASKS, 0.9)} if "potentials" in defaults(method) else {}
    return create(method, TASKS, **hp)


def _state_tensors(balancer: Balancer) -> dict[str, torch.Tensor]:
    """Every tensor a method keeps between steps (its parameters' moments included)."""
    found: dict[str, torch.Tensor] = {}
    for name, value in vars(balancer).items():
        if name == "last_weights":
            continue
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if isinstance(v, torch.Tensor):
                found[f"{name}[{i}]"] = v
            elif isinstance(v, Balancer):
                found |= {f"{name}.{k}": t for k, t in _state_tensors(v).items()}
    if balancer._optimizer is not None:
        for i, state in enumerate(balancer._optimizer.state.values()):
            # Adam keeps its step count on the CPU by design (unless capturable).
            found |= {f"optimizer[{i}].{k}": t for k, t in state.items() if k != "step"}
    return found


def _train(balancer: Balancer, put: Any, steps: int = 3, seed: int = 0) -> torch.Tensor:
    """A few steps of a toy problem whose task losses (and Gramian) come from ``put``."""
    g = torch.Generator().manual_seed(seed)
    jacobian = put(torch.randn(len(TASKS), 5, generator=g))
    theta = put(torch.randn(5, generator=g)).detach().requires_grad_()
    losses = torch.empty(0)
    for step in range(steps):
        losses = (jacobian @ theta).exp()
        gramian = (jacobian @ jacobian.T).double() if balancer.gradients != "none" else None
        if balancer.gradients == "jacobian":
            direction = balancer.direction(losses.detach(), jacobian)
            assert direction.device == jacobian.device and direction.shape == theta.shape
        total = balancer.combine(losses, gramian)
        assert total.device == losses.device
        total.backward()
        assert theta.grad is not None and theta.grad.device == losses.device
        balancer.step()
        theta.grad = None
        if balancer.uses_kpis:
            balancer.update_kpis(dict(zip(TASKS, (0.3, 0.5, 0.7), strict=True)))
        # The trial hands the epoch's means over on the CPU; a loop of one's own may not.
        mean = losses.detach()
        balancer.end_epoch(mean.cpu() if step % 2 else mean)
    return losses.detach()


@pytest.mark.parametrize("method", list_methods())
def test_a_method_trains_on_the_device_of_its_losses(method: str, stand_in: Any) -> None:
    balancer = _create(method)
    _train(balancer, stand_in.put)
    assert balancer.device == stand_in.device
    state = _state_tensors(balancer)
    assert {k for k, t in state.items() if t.device != stand_in.device} == set()
    assert balancer.last_weights.device.type == "cpu"  # reports read it
    achievements = balancer.achievements()
    if achievements is not None:
        assert achievements.device == stand_in.device


def _on_cpu(state: dict[str, Any]) -> dict[str, Any]:
    # What torch.load(map_location="cpu") gives for a checkpoint written on a GPU.
    return tree_map(lambda t: t.cpu() if isinstance(t, torch.Tensor) else t, state)


@pytest.mark.parametrize("method", list_methods())
def test_a_state_saved_on_the_device_restores_on_the_cpu_and_back(
    method: str, stand_in: Any
) -> None:
    trained = _create(method)
    _train(trained, stand_in.put)
    saved = _on_cpu(trained.state_dict())

    on_cpu = _create(method)
    on_cpu.load_state_dict(saved)
    assert {k for k, t in _state_tensors(on_cpu).items() if t.device.type != "cpu"} == set()

    # A method already on the device restores onto it, wherever the state was saved.
    on_device = _create(method).to(stand_in.device)
    on_device.load_state_dict(saved)
    assert {k for k, t in _state_tensors(on_device).items() if t.device != stand_in.device} == set()

    # All three go on alike: the same weights for the same next step, CPU or device.
    _train(trained, stand_in.put, steps=1, seed=1)
    _train(on_cpu, lambda t: t, steps=1, seed=1)
    _train(on_device, stand_in.put, steps=1, seed=1)
    torch.testing.assert_close(on_cpu.last_weights, trained.last_weights)
    torch.testing.assert_close(on_device.last_weights, trained.last_weights)
    assert {k for k, t in _state_tensors(on_cpu).items() if t.device.type != "cpu"} == set()


def _gramian(put: Any) -> torch.Tensor:
    j = torch.tensor([[1.0, 0.0, 0.5], [-0.8, 0.6, 0.0], [0.2, -1.0, 0.3]], dtype=torch.float64)
    return put(j @ j.T)


_SOLVERS = {
    "mgda_weights": lambda G: solve.mgda_weights(G),
    "cagrad_weights": lambda G: solve.cagrad_weights(G, init=torch.full((3,), 1 / 3))[0],
    "cagrad_warm_start": lambda G: solve.cagrad_weights(G)[1],
    "upgrad_weights": lambda G: solve.upgrad_weights(G),
    "dualproj_weights": lambda G: solve.dualproj_weights(G),
    "nash_mtl_weights": lambda G: solve.nash_mtl_weights(G),
    "imtl_g_weights": lambda G: solve.imtl_g_weights(G),
    "aligned_mtl_matrix": lambda G: solve.aligned_mtl_matrix(G),
    "aligned_mtl_weights": lambda G: solve.aligned_mtl_weights(G),
    "pcgrad_projections": lambda G: solve.pcgrad_projections(G, torch.Generator().manual_seed(0)),
    "pcgrad_weights": lambda G: solve.pcgrad_weights(G, torch.Generator().manual_seed(0)),
    "fairgrad_weights": lambda G: solve.fairgrad_weights(G),
    "config_weights": lambda G: solve.config_weights(G),
    "gradvac_weights": lambda G: solve.gradvac_weights(
        G, G.new_zeros(3, 3), torch.Generator().manual_seed(0)
    )[0],
    "modo_weights": lambda G: solve.modo_weights(G, G.new_full((3,), 1 / 3)),
    "sdmgrad_weights": lambda G: solve.sdmgrad_weights(G, G.new_full((3,), 1 / 3))[0],
}


def test_every_gramian_solver_is_listed_here() -> None:
    assert set(solve.__all__) <= set(_SOLVERS)


@pytest.mark.parametrize("name", sorted(_SOLVERS))
def test_a_gramian_solver_answers_on_the_gramians_device(name: str, stand_in: Any) -> None:
    # Solved on the CPU in float64 (numpy), handed back where the Gramian lives.
    on_device = _SOLVERS[name](_gramian(stand_in.put))
    assert on_device.device == stand_in.device and on_device.dtype == torch.float64
    torch.testing.assert_close(on_device.cpu(), _SOLVERS[name](_gramian(lambda t: t)))


class _Trunk(nn.Module):
    """Two shared layers and a head per task, as :class:`TaskGramian` reads a model."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6))
        self.heads = nn.ModuleList(nn.Linear(6, 1) for _ in TASKS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.shared(x)
        return [head(features).pow(2).mean() for head in self.heads]

    def shared_parameters(self) -> Any:
        return self.shared.parameters()

    def representation_module(self) -> nn.Module:
        return self.shared

    def last_shared_module(self) -> nn.Module:
        return self.shared[2]


@pytest.mark.parametrize(
    ("source", "space"),
    [("shared", "params"), ("shared", "representation"), ("last_shared", "params")],
)
def test_the_task_gramian_is_made_on_the_models_device(
    source: Any, space: Any, stand_in: Any
) -> None:
    torch.manual_seed(0)
    model = _Trunk()
    x = torch.randn(8, 4)
    expected = TaskGramian(model, source, space)(model(x))
    model.to(stand_in.device)
    gramian = TaskGramian(model, source, space)(model(stand_in.put(x)))
    assert gramian.device == stand_in.device and gramian.dtype == torch.float64
    torch.testing.assert_close(gramian.cpu(), expected)
