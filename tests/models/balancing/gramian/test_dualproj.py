"""DualProj: the mean gradient projected onto the dual cone, as a function of the Gramian."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torchjd.aggregation import DualProjWeighting
from torchjd.linalg import QuadprogProjector

from models import balancing
from models.balancing import gramian as gm
from models.balancing.gramian import _qp


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


def mean_weights(T: int) -> torch.Tensor:
    return torch.full((T,), 1.0 / T, dtype=torch.float64)


def test_dualproj_meets_the_projection_optimality_conditions(
    jacobian: Callable[..., torch.Tensor], sizes_and_seeds: list[tuple[int, int]]
) -> None:
    # d = Jᵀw is the projection of the mean iff w = u + λ with λ ≥ 0, Jd ≥ 0 and λ ⊥ Jd.
    binding = 0
    for T, seed in sizes_and_seeds:
        J = jacobian(T, seed, conflict=True)
        G = gram(J)
        w = gm.dualproj_weights(G)
        multipliers = w - mean_weights(T)
        slack = G @ w
        scale = G.diagonal().max()
        assert (multipliers >= -1e-12).all()
        assert (slack >= -1e-9 * scale).all()
        assert (multipliers * slack).abs().max() <= 1e-9 * scale
        binding += bool(multipliers.max() > 1e-3)
    # The check says little unless the mean usually lies outside the cone.
    assert binding >= len(sizes_and_seeds) // 2


def test_dualproj_hand_example() -> None:
    # g1 = (1, 0), g2 = (-2, 1): the mean (-½, ½) breaks d_1 ≥ 0 only; its projection is
    # (0, ½) = g1 + ½g2, which still satisfies ⟨g2, d⟩ = ½ ≥ 0.
    J = torch.tensor([[1.0, 0.0], [-2.0, 1.0]], dtype=torch.float64)
    w = gm.dualproj_weights(gram(J))
    assert torch.allclose(w, torch.tensor([1.0, 0.5], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(J.T @ w, torch.tensor([0.0, 0.5], dtype=torch.float64), atol=1e-9)
    # UPGrad projects each gradient and averages them: a different update here.
    assert not torch.allclose(gm.upgrad_weights(gram(J)), w, atol=1e-3)


def test_dualproj_keeps_the_mean_when_it_is_in_the_cone(
    jacobian: Callable[..., torch.Tensor],
) -> None:
    J = jacobian(4, 1).abs()  # no pair conflicts
    assert torch.allclose(gm.dualproj_weights(gram(J)), mean_weights(4), atol=1e-12)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.allclose(gm.dualproj_weights(gram(J), p), p.double(), atol=1e-12)
    # g1 = (1, 0), g2 = (-1, 1) conflict, but their mean (0, ½) is already in the cone, so
    # DualProj keeps it where UPGrad, projecting g1, does not.
    G = gram(torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64))
    assert torch.allclose(gm.dualproj_weights(G), mean_weights(2), atol=1e-12)
    assert not torch.allclose(gm.upgrad_weights(G), mean_weights(2), atol=1e-3)


g = torch.tensor([1.0, 2.0, -2.0], dtype=torch.float64)
h = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
zero = torch.zeros(3, dtype=torch.float64)
#: Degenerate Jacobians and the weights the docstring promises for them.
DEGENERATE: dict[str, tuple[torch.Tensor, list[float]]] = {
    "zero_matrix": (torch.zeros(3, 3, dtype=torch.float64), [1 / 3] * 3),
    "parallel": (torch.stack([g, 2 * g]), [0.5, 0.5]),
    "equal": (torch.stack([g, g]), [0.5, 0.5]),
    "opposite": (torch.stack([g, -g]), [0.5, 0.5]),
    "one_task": (g[None], [1.0]),
    "mean_is_zero": (torch.stack([g, h, -g - h]), [1 / 3] * 3),
    # Three gradients in a plane whose dual cone is {0}: the mean projects to d = 0, and
    # the smallest multipliers giving Jᵀw = 0 with w ≥ 1/3 are (⅓, 0, 0).
    "rank_deficient": (
        torch.tensor([[1.0, 0.0, 0.0], [-2.0, 1.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64),
        [2 / 3, 1 / 3, 1 / 3],
    ),
}


@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_input_gives_promised_finite_weights(case: str) -> None:
    J, expected = DEGENERATE[case]
    G = gram(J) if case != "zero_matrix" else J
    w = gm.dualproj_weights(G)
    assert w.dtype == torch.float64 and w.device.type == "cpu" and w.shape == (G.shape[0],)
    assert torch.isfinite(w).all()
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_a_zero_gradient_task_keeps_its_share() -> None:
    # The mean (h − g)/3 conflicts with g, so the others' weights move; the zero task's
    # multiplier has nothing to correct.
    J = torch.stack([g, zero, -2 * g + h])
    G = gram(J)
    w = gm.dualproj_weights(G)
    assert w[1].item() == pytest.approx(1 / 3, abs=1e-12)
    assert (w[[0, 2]] - 1 / 3).abs().max() > 1e-3
    assert ((G @ w) >= -1e-9 * G.diagonal().max()).all()


def test_scale_does_not_change_the_weights(jacobian: Callable[..., torch.Tensor]) -> None:
    G = gram(jacobian(5, 3, conflict=True))
    for factor in (1e-8, 1.0, 1e8):
        assert torch.allclose(gm.dualproj_weights(factor * G), gm.dualproj_weights(G), atol=1e-9)


def test_validation_and_dtypes(jacobian: Callable[..., torch.Tensor]) -> None:
    weights = gm.dualproj_weights
    with pytest.raises(ValueError, match="square"):
        weights(torch.ones(2, 3))
    with pytest.raises(ValueError, match="floating"):
        weights(torch.eye(2, dtype=torch.int64))
    with pytest.raises(FloatingPointError):
        weights(torch.tensor([[1.0, math.nan], [math.nan, 1.0]]))
    G64 = gram(jacobian(3, 0, conflict=True))
    with pytest.raises(ValueError, match="non-negative"):
        weights(G64, torch.tensor([0.5, -0.1, 0.6]))
    with pytest.raises(ValueError, match="shape"):
        weights(G64, torch.tensor([0.5, 0.5]))
    for G in (G64.float(), G64.half(), G64.bfloat16()):
        w = weights(G)
        assert w.dtype == torch.float64 and w.device.type == "cpu" and torch.isfinite(w).all()
    assert torch.allclose(weights(G64.float()), weights(G64), rtol=1e-4, atol=1e-5)


def test_registered_with_its_paper_and_no_hyperparameters(
    jacobian: Callable[..., torch.Tensor],
) -> None:
    assert "dualproj" in balancing.list_methods()
    assert balancing.defaults("dualproj") == {}
    assert "Jacobian Descent" in balancing.paper("dualproj")
    assert balancing.reads("dualproj") == "losses, Gramian"
    G = gram(jacobian(3, 4, conflict=True))
    balancer = balancing.create("dualproj", ("a", "b", "c"))
    assert torch.allclose(balancer.weights(torch.ones(3), G), gm.dualproj_weights(G).float())


# --- torchjd's DualProj as the oracle -------------------------------------------------

ORACLE_SEEDS = range(360)


def _oracle_case(seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random Jacobian (full row rank, T = 2..9, rows of mixed scale, conflicting pairs
    every other seed) and, every third seed, a random preference."""
    gen = torch.Generator().manual_seed(seed)
    T = 2 + seed % 8
    J = torch.randn(T, 10 + seed % 40, generator=gen, dtype=torch.float64)
    if seed % 2:
        J[1::2] = -J[0:-1:2] + 0.3 * J[1::2]
    J = J * torch.exp(torch.randn(T, 1, generator=gen, dtype=torch.float64))
    preference = torch.rand(T, generator=gen, dtype=torch.float64) if seed % 3 == 0 else None
    return J, preference


def _same_ridge(G: torch.Tensor, preference: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    # torchjd divides G by its trace and adds reg_eps·I; this module's QP divides by the
    # mean diagonal (trace/T) and adds RIDGE·I, i.e. reg_eps = RIDGE/T on torchjd's scale.
    # norm_eps = 0: torchjd would zero a Gramian of trace below it, which this one never does.
    projector = QuadprogProjector(norm_eps=0.0, reg_eps=_qp.RIDGE / G.shape[0])
    expected = DualProjWeighting(preference, projector=projector)(G)
    return gm.dualproj_weights(G, preference), expected


def _torchjd_defaults(G: torch.Tensor, preference: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    # torchjd's defaults (reg_eps = 1e-4 on G/trace) are this function's weights for the
    # Gramian G/trace + 1e-4·I, whose own 1e-12 ridge is then negligible.
    regularised = G / G.trace() + 1e-4 * torch.eye(G.shape[0], dtype=torch.float64)
    return gm.dualproj_weights(regularised, preference), DualProjWeighting(preference)(G)


@pytest.mark.parametrize("convention", [_same_ridge, _torchjd_defaults])
def test_dualproj_matches_torchjd(convention: Callable[..., tuple[torch.Tensor, ...]]) -> None:
    worst = 0.0
    for seed in ORACLE_SEEDS:
        J, preference = _oracle_case(seed)
        ours, expected = convention(gram(J), preference)
        worst = max(worst, (ours - expected).abs().max().item())
    assert worst <= 1e-6
