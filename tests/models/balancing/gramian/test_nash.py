"""Nash-MTL: the bargaining solution α ⊙ (Gα) = 1."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from models.balancing import gramian as gm


@pytest.mark.parametrize("conflict", [False, True])
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


def test_nash_mtl_opposite_gradients_stay_bounded_and_symmetric() -> None:
    J = torch.tensor([[1.0, 2.0, -2.0], [-1.0, -2.0, 2.0]])
    alpha = gm.nash_mtl_weights(J @ J.T)
    assert (alpha > 0).all() and alpha[0].item() == pytest.approx(alpha[1].item())
