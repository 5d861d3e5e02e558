"""Nash-MTL: the bargaining solution α ⊙ (Gα) = 1, well- and ill-conditioned."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from models.balancing import gramian as gm


def test_nash_mtl_bargaining_solution(
    jacobian: Callable[..., torch.Tensor], size_and_seed: tuple[int, int], conflict: bool
) -> None:
    T, seed = size_and_seed
    J = jacobian(T, seed, conflict=conflict)
    G = J @ J.T
    alpha = gm.nash_mtl_weights(G)
    assert (alpha > 0).all()
    assert torch.allclose((G @ alpha) * alpha, torch.ones(T, dtype=torch.float64), atol=1e-4)
    for k in (1e-4, 7.0, 1e3):
        assert torch.allclose(gm.nash_mtl_weights(k * G), alpha / math.sqrt(k), rtol=1e-8)
    assert torch.allclose(gm.nash_mtl_weights(G, init=alpha * 1.3), alpha, rtol=1e-8)


def test_nash_mtl_nearly_opposite_gradients_by_hand() -> None:
    # Unit g1 and g2 = 100·(cos θ, sin θ): with unit gradients the equation is symmetric, so
    # β1 = β2 = β with β²(1 + cos θ) = 1, and α_t = β/‖g_t‖.
    cos = -0.9995
    J = torch.tensor([[1.0, 0.0], [100 * cos, 100 * math.sqrt(1 - cos**2)]], dtype=torch.float64)
    alpha = gm.nash_mtl_weights(J @ J.T)
    beta = 1 / math.sqrt(1 + cos)
    assert torch.allclose(alpha, torch.tensor([beta, beta / 100], dtype=torch.float64), rtol=1e-9)


def _ill_conditioned(seed: int) -> torch.Tensor:
    """Task gradients (T, 50) close to a (T−1)-dim span, norms up to 10⁴ apart; on even
    seeds the last one is close to minus a positive mix of the others (nearly opposite)."""
    rng = np.random.default_rng(seed)
    T = int(rng.integers(2, 7))
    basis = rng.standard_normal((T - 1, 50))
    mix = rng.standard_normal((T, T - 1))
    if seed % 2 == 0:
        mix[-1] = -rng.uniform(0.2, 1.0, T - 1) @ mix[:-1]
    J = mix @ basis + 10 ** rng.uniform(-4, -2) * rng.standard_normal((T, 50))
    return torch.from_numpy(J * 10 ** rng.uniform(-2, 2, (T, 1)))


@pytest.mark.parametrize("seed", range(24))
def test_nash_mtl_solves_ill_conditioned_gramians(seed: int) -> None:
    J = _ill_conditioned(seed)
    G = J @ J.T
    eig = torch.linalg.eigvalsh(G)
    assert eig[0] / eig[-1] <= 2e-4
    alpha = gm.nash_mtl_weights(G)
    ones = torch.ones(len(alpha), dtype=torch.float64)
    assert torch.allclose(alpha * (G @ alpha), ones, rtol=0, atol=1e-6)
    # The update d = Jᵀα decreases every task's loss: α_t ⟨g_t, d⟩ > 0.
    assert (alpha * (J @ (J.T @ alpha)) > 0).all()


def test_nash_mtl_opposite_gradients_stay_bounded_and_symmetric() -> None:
    J = torch.tensor([[1.0, 2.0, -2.0], [-1.0, -2.0, 2.0]])
    alpha = gm.nash_mtl_weights(J @ J.T)
    assert (alpha > 0).all() and alpha[0].item() == pytest.approx(alpha[1].item())
