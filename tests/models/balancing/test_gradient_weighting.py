"""The gradient-level balancers: what they keep between steps, and what they hand the loss."""

from __future__ import annotations

import io
import math

import pytest
import torch

from models import balancing
from models.balancing import gramian as solve

TASKS = ("a", "b", "c")


def _methods() -> list[str]:
    return [m for m in balancing.list_methods() if "Gramian" in balancing.reads(m)]


def _create(method: str, tasks: tuple[str, ...] = TASKS) -> balancing.Balancer:
    extra = (
        {"potentials": {t: 0.7 for t in tasks}}
        if "potentials" in balancing.defaults(method)
        else {}
    )
    return balancing.create(method, tasks, **extra)


def _gramian(seed: int, rows: int = 3, dim: int = 20) -> torch.Tensor:
    jacobian = torch.randn(
        rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return jacobian @ jacobian.T


def test_every_gradient_method_reads_a_gramian() -> None:
    assert {"mgda", "pcgrad", "cagrad", "imtl_g", "imtl", "gradnorm", "nash_mtl"} <= set(_methods())
    assert {"aligned_mtl", "db_mtl", "upgrad", "pcgrad_amtl", "cagrad_amtl"} <= set(_methods())
    assert "dualproj" in _methods()
    with pytest.raises(ValueError, match="Gramian"):
        _create("mgda").combine(torch.ones(3))


@pytest.mark.parametrize("method", _methods())
def test_the_loss_gradient_is_the_weighted_sum(method: str) -> None:
    balancer = _create(method)
    losses = torch.tensor([0.7, 1.3, 2.0], requires_grad=True)
    balancer.combine(losses, _gramian(0)).backward()
    # d(loss)/dL_t is the effective weight of task t: the update is Σ w_t ∇L_t.
    assert torch.allclose(losses.grad, balancer.last_weights, rtol=1e-5)
    assert torch.isfinite(balancer.last_weights).all()


def _jacobian_methods() -> list[str]:
    return [m for m in balancing.list_methods() if "Jacobian" in balancing.reads(m)]


@pytest.mark.parametrize("method", _methods() + _jacobian_methods())
@pytest.mark.parametrize(
    "case",
    ["zero_gradient", "unlabelled", "collinear", "opposite", "rank_deficient", "zero_matrix"],
)
def test_degenerate_input_gives_finite_weights(method: str, case: str) -> None:
    g = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    h = torch.tensor([0.3, -1.0, 1.0], dtype=torch.float64)
    losses = torch.tensor([0.5, 1.0, 2.0])
    jacobian = {
        "zero_gradient": torch.stack([g, h, torch.zeros(3, dtype=torch.float64)]),
        "unlabelled": torch.stack([g, h, torch.zeros(3, dtype=torch.float64)]),
        "collinear": torch.stack([g, 2 * g, 0.5 * g]),
        "opposite": torch.stack([g, -g, h]),
        "rank_deficient": torch.stack([g, h, g - 2 * h]),
        "zero_matrix": torch.zeros(3, 3, dtype=torch.float64),
    }[case]
    if case == "unlabelled":
        losses = torch.tensor([0.5, 1.0, 0.0])
    balancer = _create(method)
    for _ in range(3):  # stateful methods must stay finite step after step
        if balancer.gradients == "jacobian":
            assert torch.isfinite(balancer.direction(losses, jacobian)).all()
        balancer.combine(losses.clone().requires_grad_(), jacobian @ jacobian.T).backward()
        balancer.step()
        assert torch.isfinite(balancer.last_weights).all(), balancer.last_weights


@pytest.mark.parametrize("method", _methods())
def test_non_finite_loss_or_gradient_fails_with_the_task_named(method: str) -> None:
    balancer = _create(method)
    with pytest.raises(FloatingPointError, match="'b'"):
        balancer.combine(torch.tensor([1.0, math.nan, 1.0]), _gramian(1))
    bad = _gramian(1)
    bad[2, 2] = math.inf
    with pytest.raises(FloatingPointError, match="gradient for task\\(s\\) \\['c'\\]"):
        balancer.combine(torch.ones(3), bad)


@pytest.mark.parametrize("method", _methods())
def test_state_round_trip(method: str) -> None:
    first = _create(method)
    for seed in range(3):
        losses = torch.rand(3, generator=torch.Generator().manual_seed(seed)) + 0.1
        first.combine(losses.requires_grad_(), _gramian(seed)).backward()
        first.step()
        first.update_kpis({"a": 0.3, "b": 0.5, "c": 0.7})
    second = _create(method)
    buffer = io.BytesIO()  # through bytes, as a checkpoint is
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second.load_state_dict(torch.load(buffer, weights_only=False))
    losses, gramian = torch.tensor([0.4, 0.9, 1.5]), _gramian(7)
    assert torch.equal(first.weights(losses, gramian), second.weights(losses, gramian))


def test_imtl_learns_its_loss_scales() -> None:
    imtl = _create("imtl")
    losses = torch.tensor([0.5, 1.0, 2.0])
    gramian = _gramian(3)
    imtl.combine(losses.clone().requires_grad_(), gramian).backward()
    alpha = solve.imtl_g_weights(gramian)  # the scales start at e^0 = 1
    expected = losses - 1  # d/ds Σ (e^s L − s) at s = 0
    assert torch.allclose(imtl.log_scales.grad, expected, atol=1e-6)
    assert torch.allclose(imtl.last_weights, alpha.float(), atol=1e-6)


def test_imtl_scales_follow_their_own_losses_whatever_the_sign_of_alpha() -> None:
    # g = (2,0,0), (1,1,0), (0,1,1): the one d with equal projections 2√2 − 2 on every unit
    # gradient and Σα = 1 is d = Jᵀα with α = (4√2 − 5, 8 − 6√2, 2√2 − 2); α_2 < 0.
    jacobian = torch.tensor([[2.0, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.float64)
    r = math.sqrt(2)
    alpha = torch.tensor([4 * r - 5, 8 - 6 * r, 2 * r - 2])
    imtl = _create("imtl")
    losses = torch.tensor([0.5, 2.0, 3.0])
    imtl.combine(losses.clone().requires_grad_(), jacobian @ jacobian.T).backward()
    assert torch.allclose(imtl.last_weights, alpha, atol=1e-6)
    # ∂/∂s_t (e^{s_t} L_t − s_t) = L_t − 1 at s = 0, not α_t (L_t − 1).
    assert torch.allclose(imtl.log_scales.grad, torch.tensor([-0.5, 1.0, 2.0]))

    # Away from s = 0: e^{s_t} L_t − 1, and nothing for the unlabelled task (L_t = 0).
    imtl = _create("imtl")
    scales = torch.tensor([0.5, -1.0, 0.2])
    with torch.no_grad():
        imtl.log_scales.copy_(scales)
    losses = torch.tensor([0.5, 0.0, 3.0])
    imtl.combine(losses.clone().requires_grad_(), jacobian @ jacobian.T).backward()
    expected = torch.tensor([0.5 * math.exp(0.5) - 1, 0.0, 3 * math.exp(0.2) - 1])
    assert torch.allclose(imtl.log_scales.grad, expected)


def test_gradnorm_moves_weight_to_the_task_behind_its_target() -> None:
    gradnorm = _create("gradnorm", ("a", "b"))
    gramian = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    gradnorm.combine(torch.tensor([1.0, 1.0]).requires_grad_(), gramian).backward()
    gradnorm.step()
    # Equal training rates, gradient norms 2 and 1: the weaker gradient gains weight.
    weights = gradnorm.weights(torch.tensor([1.0, 1.0]), gramian)
    assert weights[1] > weights[0]
    assert weights.sum().item() == pytest.approx(2.0)


def test_db_mtl_scales_log_gradients_to_the_largest() -> None:
    db = _create("db_mtl", ("a", "b"))
    losses = torch.tensor([2.0, 0.5])
    gramian = torch.diag(torch.tensor([16.0, 1.0], dtype=torch.float64))
    weights = db.weights(losses, gramian)
    # ‖∇ log L‖ = (4/2, 1/0.5) = (2, 2): equal, so the weights are 1/L_t.
    assert torch.allclose(weights, 1 / losses)


def test_amtl_surgery_weighs_the_gramian_by_achievement() -> None:
    amtl = _create("amtl")
    pcgrad_amtl = _create("pcgrad_amtl")
    for balancer in (amtl, pcgrad_amtl):
        balancer.update_kpis({"a": 0.3, "b": 0.5, "c": 0.7})
    losses = torch.tensor([0.5, 1.0, 2.0])
    scales = amtl.weights(losses).double()
    # Orthogonal gradients need no surgery: PCGrad of the scaled gradients is their sum.
    gramian = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.allclose(pcgrad_amtl.weights(losses, gramian).double(), scales, rtol=1e-5)
