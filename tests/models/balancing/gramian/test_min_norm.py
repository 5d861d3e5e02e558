"""MGDA, CAGrad and UPGrad, checked against their defining properties."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from models.balancing import gramian as gm

# --- MGDA -----------------------------------------------------------------------------


def test_mgda_meets_kkt(sweep_gramian: tuple[int, int, torch.Tensor]) -> None:
    T, seed, G = sweep_gramian
    w = gm.mgda_weights(G)
    assert w.dtype == torch.float64 and w.shape == (T,)
    assert (w >= 0).all()
    assert w.sum().item() == pytest.approx(1.0, abs=1e-12)
    lam = (w @ G @ w).item()
    Gw = G @ w
    tol = 1e-8 * G.diagonal().max().item()
    assert (Gw >= lam - tol).all()  # no vertex improves on w
    assert torch.allclose(Gw[w > 1e-9], torch.full_like(Gw[w > 1e-9], lam), atol=tol)


def test_mgda_orthogonal_gradients_by_hand() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 4.0]])  # norms 1 and 2; minimise w1² + 4w2²
    assert torch.allclose(gm.mgda_weights(G), torch.tensor([0.8, 0.2], dtype=torch.float64))


# --- CAGrad ---------------------------------------------------------------------------


def _simplex_grid(T: int, steps: int) -> np.ndarray:
    if T == 2:
        t = np.linspace(0, 1, steps + 1)
        return np.stack([t, 1 - t], 1)
    points = [(i, j, steps - i - j) for i in range(steps + 1) for j in range(steps + 1 - i)]
    return np.array(points, dtype=np.float64) / steps


@pytest.mark.parametrize("T", [2, 3])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [0.2, 0.5, 1.0])
def test_cagrad_solves_its_max_min_problem(
    jacobian: Callable[..., torch.Tensor], T: int, seed: int, c: float
) -> None:
    J = jacobian(T, seed, conflict=seed % 2 == 1)
    G = J @ J.T
    w, _ = gm.cagrad_weights(G, c=c, rescale=False)
    g0 = J.mean(0)
    d = J.T @ w
    # On the ball's boundary: ‖d − g0‖ = c‖g0‖.
    assert (d - g0).norm().item() == pytest.approx(c * g0.norm().item(), rel=1e-9)
    # Weak duality: for every w on the simplex, min_t ⟨g_t, d⟩ ≤ F(w) = ⟨g_w, g0⟩ + c‖g0‖‖g_w‖;
    # the optimum meets the grid's best value up to the grid's resolution.
    grid = _simplex_grid(T, 2000 if T == 2 else 300)
    A, b = G.numpy(), G.numpy().mean(1)
    dual = grid @ b + c * g0.norm().item() * np.sqrt(np.einsum("ki,ij,kj->k", grid, A, grid))
    worst = (J @ d).min().item()
    assert worst <= dual.min() + 1e-9
    assert worst >= dual.min() - 1e-4 * np.abs(dual).max()
    rescaled, _ = gm.cagrad_weights(G, c=c)
    assert torch.allclose(rescaled, w / (1 + c**2))


def test_cagrad_strong_duality_and_warm_start(
    jacobian: Callable[..., torch.Tensor], size_and_seed: tuple[int, int]
) -> None:
    J = jacobian(*size_and_seed, conflict=True)
    G = J @ J.T
    w, w_star = gm.cagrad_weights(G, c=0.5, rescale=False)
    g_w = J.T @ w_star
    dual = (g_w @ J.mean(0) + 0.5 * J.mean(0).norm() * g_w.norm()).item()
    assert (J @ (J.T @ w)).min().item() == pytest.approx(dual, rel=1e-8, abs=1e-10)
    warm, warm_star = gm.cagrad_weights(G, c=0.5, rescale=False, init=w_star)
    assert torch.allclose(warm, w, rtol=1e-7) and torch.allclose(warm_star, w_star, atol=1e-7)


def test_cagrad_with_c_zero_is_the_mean(jacobian: Callable[..., torch.Tensor]) -> None:
    J = jacobian(3, 0, conflict=True)
    w, _ = gm.cagrad_weights(J @ J.T, c=0.0)
    assert torch.allclose(w, torch.full((3,), 1 / 3, dtype=torch.float64))


# --- UPGrad ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", [gm.upgrad_weights, gm.dualproj_weights], ids=lambda r: r.__name__)
def test_dual_cone_rules_land_in_the_dual_cone(
    rule: Callable[..., torch.Tensor], sweep_gramian: tuple[int, int, torch.Tensor]
) -> None:
    T, seed, G = sweep_gramian
    tol = 1e-9 * G.diagonal().max()
    assert ((G @ rule(G)) >= -tol).all()  # ⟨g_t, d⟩ ≥ 0 for every task
    preference = torch.rand(T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert ((G @ rule(G, preference)) >= -tol).all()


def test_upgrad_hand_example_and_no_conflict(jacobian: Callable[..., torch.Tensor]) -> None:
    # g1 = (1, 0) projects to (½, ½) = g1 + ½g2; g2 = (-1, 1) projects to (0, 1) = g1 + g2.
    J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    assert torch.allclose(gm.upgrad_weights(J @ J.T), torch.tensor([1.0, 0.75]).double(), atol=1e-9)
    J = jacobian(4, 1).abs()
    G = J @ J.T
    assert torch.allclose(gm.upgrad_weights(G), torch.full((4,), 0.25).double())
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.allclose(gm.upgrad_weights(G, p), p.double())
    with pytest.raises(ValueError, match="non-negative"):
        gm.upgrad_weights(G, -p)
    with pytest.raises(ValueError, match="shape"):
        gm.upgrad_weights(G, p[:3])
