"""PCGrad, IMTL-G and Aligned-MTL, checked against their defining properties."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from models.balancing import gramian as gm

# --- PCGrad ---------------------------------------------------------------------------


def _pcgrad_on_vectors(J: torch.Tensor, seed: int) -> torch.Tensor:
    """PCGrad on the gradient vectors themselves, as in the paper's code."""
    gen = torch.Generator().manual_seed(seed)
    projected = []
    for i in range(J.shape[0]):
        g = J[i].clone()
        for j in torch.randperm(J.shape[0], generator=gen).tolist():
            if j != i and (dot := g @ J[j]) < 0:
                g = g - dot / (J[j] @ J[j]) * J[j]
        projected.append(g)
    return torch.stack(projected)


def test_pcgrad_two_conflicting_by_hand() -> None:
    J = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    C = gm.pcgrad_projections(J @ J.T, torch.Generator().manual_seed(0))
    assert torch.allclose(C, torch.tensor([[1.0, 0.5], [1.0, 1.0]], dtype=torch.float64))
    # g1' = (½, ½) ⟂ g2 and g2' = (0, 1) ⟂ g1; d = (½, 3/2) = 2 g1 + 1.5 g2.
    assert torch.allclose(gm.pcgrad_weights(J @ J.T, torch.Generator()), C.sum(0))
    assert torch.allclose(C.sum(0), torch.tensor([2.0, 1.5], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_two_tasks_end_orthogonal(jacobian: Callable[..., torch.Tensor], seed: int) -> None:
    J = jacobian(2, seed, conflict=True)
    assert (J[0] @ J[1]).item() < 0
    projected = gm.pcgrad_projections(J @ J.T, torch.Generator().manual_seed(seed)) @ J
    assert (projected[0] @ J[1]).item() == pytest.approx(0.0, abs=1e-10)
    assert (projected[1] @ J[0]).item() == pytest.approx(0.0, abs=1e-10)


def test_pcgrad_matches_projection_of_vectors(
    jacobian: Callable[..., torch.Tensor], size_and_seed: tuple[int, int]
) -> None:
    T, seed = size_and_seed
    J = jacobian(T, seed, conflict=True)
    G = J @ J.T
    C = gm.pcgrad_projections(G, torch.Generator().manual_seed(seed))
    assert torch.allclose(C @ J, _pcgrad_on_vectors(J, seed), atol=1e-10)
    w = gm.pcgrad_weights(G, torch.Generator().manual_seed(seed))
    assert torch.allclose(w, C.sum(0))
    assert torch.equal(w, gm.pcgrad_weights(G, torch.Generator().manual_seed(seed)))


def test_pcgrad_without_conflict_is_identity(jacobian: Callable[..., torch.Tensor]) -> None:
    J = jacobian(4, 0).abs()  # positive entries: every inner product is positive
    C = gm.pcgrad_projections(J @ J.T, torch.Generator().manual_seed(3))
    assert torch.equal(C, torch.eye(4, dtype=torch.float64))
    assert torch.equal(gm.pcgrad_weights(J @ J.T, torch.Generator()), torch.ones(4).double())


# --- IMTL-G ---------------------------------------------------------------------------


def test_imtl_g_equal_projections(
    jacobian: Callable[..., torch.Tensor], size_and_seed: tuple[int, int], conflict: bool
) -> None:
    T, seed = size_and_seed
    J = jacobian(T, seed, conflict=conflict)
    J[0] *= 10.0  # unequal norms are the point of the method
    w = gm.imtl_g_weights(J @ J.T)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-10)
    d = J.T @ w
    projections = (J / J.norm(dim=1, keepdim=True)) @ d
    assert torch.allclose(projections, projections.mean().expand(T), rtol=1e-8, atol=1e-10)


def test_imtl_g_hand_cases(jacobian: Callable[..., torch.Tensor]) -> None:
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    w = gm.imtl_g_weights(opposite @ opposite.T)
    assert torch.allclose(w, torch.tensor([0.5, 0.5]).double())
    J = jacobian(3, 7)
    with_zero = torch.stack([J[0], torch.zeros(50, dtype=torch.float64), J[1]])
    w = gm.imtl_g_weights(with_zero @ with_zero.T)
    assert w[1] == 0
    assert torch.allclose(w[[0, 2]], gm.imtl_g_weights(J[:2] @ J[:2].T))


# --- Aligned-MTL ----------------------------------------------------------------------


def test_aligned_mtl_equalises_singular_values(
    jacobian: Callable[..., torch.Tensor], size_and_seed: tuple[int, int]
) -> None:
    T, seed = size_and_seed
    J = jacobian(T, seed, conflict=True)
    J[0] *= 5.0
    G = J @ J.T
    B = gm.aligned_mtl_matrix(G)
    singular = torch.linalg.svdvals(B @ J)
    lam_min = torch.linalg.eigvalsh(G).min()
    assert torch.allclose(singular, lam_min.sqrt().expand(T), rtol=1e-8)
    assert torch.allclose(gm.aligned_mtl_weights(G), B @ torch.ones(T, dtype=torch.float64))
    assert torch.allclose(gm.aligned_mtl_weights(123.0 * G), gm.aligned_mtl_weights(G))
