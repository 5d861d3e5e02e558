"""The Gramian-based balancing rules, checked against their defining properties."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from models.balancing import gramian as gm
from models.balancing.gramian._qp import nonneg_qp

SIZES_AND_SEEDS = [(T, seed) for T in range(2, 7) for seed in range(3)]


def jacobian(T: int, seed: int, dim: int = 50, conflict: bool = False) -> torch.Tensor:
    """Random task gradients (T, dim) in float64; ``conflict`` makes pairs nearly opposite."""
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(T, dim, generator=gen, dtype=torch.float64)
    if conflict:
        J[1::2] = -J[0:-1:2] + 0.3 * J[1::2]
    return J


def gram(J: torch.Tensor) -> torch.Tensor:
    return J @ J.T


def mgda(G: torch.Tensor) -> torch.Tensor:
    return gm.mgda_weights(G)


def pcgrad(G: torch.Tensor) -> torch.Tensor:
    return gm.pcgrad_weights(G, torch.Generator().manual_seed(0))


def cagrad(G: torch.Tensor) -> torch.Tensor:
    return gm.cagrad_weights(G)[0]


ALL: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mgda": mgda,
    "pcgrad": pcgrad,
    "cagrad": cagrad,
    "imtl_g": gm.imtl_g_weights,
    "nash_mtl": gm.nash_mtl_weights,
    "aligned_mtl": gm.aligned_mtl_weights,
    "upgrad": gm.upgrad_weights,
}


# --- nonneg_qp ------------------------------------------------------------------------


def _qp_by_enumeration(G: np.ndarray, c: np.ndarray, simplex: bool) -> float:
    """The optimal value, from the KKT point of every support (exact for definite G)."""
    T = len(c)
    best = math.inf
    for size in range(1 if simplex else 0, T + 1):
        for support in itertools.combinations(range(T), size):
            F = list(support)
            x = np.zeros(T)
            if F:
                n = len(F)
                kkt = np.zeros((n + 1, n + 1)) if simplex else np.zeros((n, n))
                kkt[:n, :n] = G[np.ix_(F, F)]
                rhs = np.zeros(kkt.shape[0])
                rhs[:n] = -c[F]
                if simplex:
                    kkt[:n, n] = kkt[n, :n] = 1.0
                    rhs[n] = 1.0
                x[F] = np.linalg.lstsq(kkt, rhs, rcond=None)[0][:n]
            if (x >= -1e-12).all() and (not simplex or abs(x.sum() - 1) < 1e-9):
                best = min(best, 0.5 * x @ G @ x + c @ x)
    return best


@pytest.mark.parametrize("simplex", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_nonneg_qp_matches_enumeration(simplex: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 7))
    J = rng.standard_normal((T, int(rng.integers(T, T + 5))))  # full row rank: G definite
    G = J @ J.T
    c = 3 * rng.standard_normal(T)
    x = nonneg_qp(G, c, simplex)
    assert x.shape == (T,) and np.isfinite(x).all() and (x >= 0).all()
    if simplex:
        assert x.sum() == pytest.approx(1.0, abs=1e-12)
    value = 0.5 * x @ G @ x + c @ x
    assert value == pytest.approx(_qp_by_enumeration(G, c, simplex), abs=1e-9 * (1 + abs(value)))


@pytest.mark.parametrize("seed", range(10))
def test_nonneg_qp_matches_scipy_on_singular_g(seed: int) -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(100 + seed)
    T = 5
    J = rng.standard_normal((T, 2))  # rank 2: G singular
    G = J @ J.T
    for simplex, c in [(True, rng.standard_normal(T)), (False, G @ rng.standard_normal(T))]:
        # Without the simplex, c in G's range keeps the problem bounded.
        x = nonneg_qp(G, c, simplex)
        constraints = [{"type": "eq", "fun": lambda z: z.sum() - 1}] if simplex else []
        ref = minimize(
            lambda z, c=c: 0.5 * z @ G @ z + c @ z,
            np.full(T, 1 / T),
            jac=lambda z, c=c: G @ z + c,
            bounds=[(0, None)] * T,
            constraints=constraints,
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        assert (x >= 0).all()
        assert 0.5 * x @ G @ x + c @ x <= ref.fun + 1e-9


def test_nonneg_qp_degenerate_and_invalid() -> None:
    zero = np.zeros((3, 3))
    assert np.allclose(nonneg_qp(zero, np.zeros(3), simplex=True), 1 / 3)
    assert np.array_equal(nonneg_qp(zero, np.zeros(3), simplex=False), np.zeros(3))
    assert np.array_equal(nonneg_qp(zero, np.array([0.0, 1.0, 2.0]), simplex=True), [1, 0, 0])
    assert np.array_equal(nonneg_qp(np.ones((1, 1)), np.array([5.0]), simplex=True), [1.0])
    assert nonneg_qp(np.ones((1, 1)), np.array([-2.0]), simplex=False) == pytest.approx([2.0])
    unbounded = nonneg_qp(zero, np.array([-1.0, 0.0, 0.0]), simplex=False)
    assert np.isfinite(unbounded).all()
    with pytest.raises(ValueError, match="match c"):
        nonneg_qp(np.eye(2), np.zeros(3), simplex=True)
    with pytest.raises(FloatingPointError):
        nonneg_qp(np.full((2, 2), np.nan), np.zeros(2), simplex=True)


# --- MGDA -----------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
@pytest.mark.parametrize("conflict", [False, True])
def test_mgda_meets_kkt(T: int, seed: int, conflict: bool) -> None:
    G = gram(jacobian(T, seed, dim=4 if seed == 2 else 50, conflict=conflict))
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
    C = gm.pcgrad_projections(gram(J), torch.Generator().manual_seed(0))
    assert torch.allclose(C, torch.tensor([[1.0, 0.5], [1.0, 1.0]], dtype=torch.float64))
    # g1' = (½, ½) ⟂ g2 and g2' = (0, 1) ⟂ g1; d = (½, 3/2) = 2 g1 + 1.5 g2.
    assert torch.allclose(gm.pcgrad_weights(gram(J), torch.Generator()), C.sum(0))
    assert torch.allclose(C.sum(0), torch.tensor([2.0, 1.5], dtype=torch.float64))


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_two_tasks_end_orthogonal(seed: int) -> None:
    J = jacobian(2, seed, conflict=True)
    assert (J[0] @ J[1]).item() < 0
    projected = gm.pcgrad_projections(gram(J), torch.Generator().manual_seed(seed)) @ J
    assert (projected[0] @ J[1]).item() == pytest.approx(0.0, abs=1e-10)
    assert (projected[1] @ J[0]).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
def test_pcgrad_matches_projection_of_vectors(T: int, seed: int) -> None:
    J = jacobian(T, seed, conflict=True)
    C = gm.pcgrad_projections(gram(J), torch.Generator().manual_seed(seed))
    assert torch.allclose(C @ J, _pcgrad_on_vectors(J, seed), atol=1e-10)
    w = gm.pcgrad_weights(gram(J), torch.Generator().manual_seed(seed))
    assert torch.allclose(w, C.sum(0))
    assert torch.equal(w, gm.pcgrad_weights(gram(J), torch.Generator().manual_seed(seed)))


def test_pcgrad_without_conflict_is_identity() -> None:
    J = jacobian(4, 0).abs()  # positive entries: every inner product is positive
    C = gm.pcgrad_projections(gram(J), torch.Generator().manual_seed(3))
    assert torch.equal(C, torch.eye(4, dtype=torch.float64))
    assert torch.equal(gm.pcgrad_weights(gram(J), torch.Generator()), torch.ones(4).double())


# --- IMTL-G ---------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
@pytest.mark.parametrize("conflict", [False, True])
def test_imtl_g_equal_projections(T: int, seed: int, conflict: bool) -> None:
    J = jacobian(T, seed, conflict=conflict)
    J[0] *= 10.0  # unequal norms are the point of the method
    w = gm.imtl_g_weights(gram(J))
    assert w.sum().item() == pytest.approx(1.0, abs=1e-10)
    d = J.T @ w
    projections = (J / J.norm(dim=1, keepdim=True)) @ d
    assert torch.allclose(projections, projections.mean().expand(T), rtol=1e-8, atol=1e-10)


def test_imtl_g_hand_cases() -> None:
    opposite = gram(torch.tensor([[1.0, 2.0], [-1.0, -2.0]]))
    assert torch.allclose(gm.imtl_g_weights(opposite), torch.tensor([0.5, 0.5]).double())
    J = jacobian(3, 7)
    with_zero = torch.stack([J[0], torch.zeros(50, dtype=torch.float64), J[1]])
    w = gm.imtl_g_weights(gram(with_zero))
    assert w[1] == 0
    assert torch.allclose(w[[0, 2]], gm.imtl_g_weights(gram(J[:2])))


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
def test_cagrad_solves_its_max_min_problem(T: int, seed: int, c: float) -> None:
    J = jacobian(T, seed, conflict=seed % 2 == 1)
    G = gram(J)
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


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
def test_cagrad_strong_duality_and_warm_start(T: int, seed: int) -> None:
    J = jacobian(T, seed, conflict=True)
    G = gram(J)
    w, w_star = gm.cagrad_weights(G, c=0.5, rescale=False)
    g_w = J.T @ w_star
    dual = (g_w @ J.mean(0) + 0.5 * J.mean(0).norm() * g_w.norm()).item()
    assert (J @ (J.T @ w)).min().item() == pytest.approx(dual, rel=1e-8, abs=1e-10)
    warm, warm_star = gm.cagrad_weights(G, c=0.5, rescale=False, init=w_star)
    assert torch.allclose(warm, w, rtol=1e-7) and torch.allclose(warm_star, w_star, atol=1e-7)


def test_cagrad_with_c_zero_is_the_mean() -> None:
    w, _ = gm.cagrad_weights(gram(jacobian(3, 0, conflict=True)), c=0.0)
    assert torch.allclose(w, torch.full((3,), 1 / 3, dtype=torch.float64))


# --- Nash-MTL -------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
@pytest.mark.parametrize("conflict", [False, True])
def test_nash_mtl_bargaining_solution(T: int, seed: int, conflict: bool) -> None:
    G = gram(jacobian(T, seed, conflict=conflict))
    alpha = gm.nash_mtl_weights(G)
    assert (alpha > 0).all()
    assert torch.allclose((G @ alpha) * alpha, torch.ones(T, dtype=torch.float64), atol=1e-4)
    for k in (1e-4, 7.0, 1e3):
        assert torch.allclose(gm.nash_mtl_weights(k * G), alpha / math.sqrt(k), rtol=1e-8)
    assert torch.allclose(gm.nash_mtl_weights(G, init=alpha * 1.3), alpha, rtol=1e-8)


# --- Aligned-MTL ----------------------------------------------------------------------


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
def test_aligned_mtl_equalises_singular_values(T: int, seed: int) -> None:
    J = jacobian(T, seed, conflict=True)
    J[0] *= 5.0
    G = gram(J)
    B = gm.aligned_mtl_matrix(G)
    singular = torch.linalg.svdvals(B @ J)
    lam_min = torch.linalg.eigvalsh(G).min()
    assert torch.allclose(singular, lam_min.sqrt().expand(T), rtol=1e-8)
    assert torch.allclose(gm.aligned_mtl_weights(G), B @ torch.ones(T, dtype=torch.float64))
    assert torch.allclose(gm.aligned_mtl_weights(123.0 * G), gm.aligned_mtl_weights(G))


# --- UPGrad ---------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "seed"), SIZES_AND_SEEDS)
@pytest.mark.parametrize("conflict", [False, True])
def test_upgrad_lands_in_the_dual_cone(T: int, seed: int, conflict: bool) -> None:
    J = jacobian(T, seed, dim=4 if seed == 2 else 50, conflict=conflict)
    G = gram(J)
    tol = 1e-9 * G.diagonal().max()
    w = gm.upgrad_weights(G)
    assert ((G @ w) >= -tol).all()  # ⟨g_t, d⟩ ≥ 0 for every task
    preference = torch.rand(T, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert ((G @ gm.upgrad_weights(G, preference)) >= -tol).all()


def test_upgrad_hand_example_and_no_conflict() -> None:
    # g1 = (1, 0) projects to (½, ½) = g1 + ½g2; g2 = (-1, 1) projects to (0, 1) = g1 + g2.
    G = gram(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    assert torch.allclose(gm.upgrad_weights(G), torch.tensor([1.0, 0.75]).double(), atol=1e-9)
    J = jacobian(4, 1).abs()
    assert torch.allclose(gm.upgrad_weights(gram(J)), torch.full((4,), 0.25).double())
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.allclose(gm.upgrad_weights(gram(J), p), p.double())
    with pytest.raises(ValueError, match="non-negative"):
        gm.upgrad_weights(gram(J), -p)
    with pytest.raises(ValueError, match="shape"):
        gm.upgrad_weights(gram(J), p[:3])


# --- degenerate input and validation, for every function ------------------------------

g = torch.tensor([1.0, 2.0, -2.0])
h = torch.tensor([0.0, 1.0, 1.0])
DEGENERATE = {
    "zero": torch.zeros(3, 3),
    "zero_task": gram(torch.stack([g, torch.zeros(3), h])),
    "collinear": gram(torch.stack([g, 2 * g])),
    "equal": gram(torch.stack([g, g])),
    "opposite": gram(torch.stack([g, -g])),
    "one_task": gram(g[None]),
    "hull_contains_zero": gram(torch.stack([g, h, -g - h])),
}
#: What each docstring promises; None where only finiteness is promised.
PROMISED: dict[str, dict[str, list[float] | None]] = {
    "mgda": {
        "zero": [1 / 3] * 3,
        "zero_task": [0, 1, 0],
        "collinear": [1, 0],
        "equal": [0.5, 0.5],
        "opposite": [0.5, 0.5],
        "one_task": [1],
        "hull_contains_zero": [1 / 3] * 3,
    },
    "pcgrad": {"zero": [1, 1, 1], "collinear": [1, 1], "equal": [1, 1], "one_task": [1]},
    "cagrad": {
        "zero": [0.8 / 3] * 3,
        "opposite": [0.4, 0.4],
        "one_task": [1.5 / 1.25],
        "hull_contains_zero": [0.8 / 3] * 3,
    },
    "imtl_g": {"zero": [1 / 3] * 3, "opposite": [0.5, 0.5], "equal": [0.5, 0.5], "one_task": [1]},
    "nash_mtl": {"zero": [0, 0, 0], "one_task": [1 / 3]},
    "aligned_mtl": {
        "zero": [0, 0, 0],
        "collinear": [0.6, 1.2],
        "opposite": [0, 0],
        "one_task": [1],
    },
    "upgrad": {
        "zero": [1 / 3] * 3,
        "zero_task": [1 / 3] * 3,
        "collinear": [0.5, 0.5],
        "opposite": [1, 1],
        "one_task": [1],
    },
}


@pytest.mark.parametrize("case", DEGENERATE)
@pytest.mark.parametrize("method", ALL)
def test_degenerate_input_gives_promised_finite_weights(method: str, case: str) -> None:
    G = DEGENERATE[case]
    w = ALL[method](G)
    assert w.dtype == torch.float64 and w.device.type == "cpu" and w.shape == (G.shape[0],)
    assert torch.isfinite(w).all()
    expected = PROMISED[method].get(case)
    if expected is not None:
        assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_zero_gradient_task_gets_zero_weight_where_promised() -> None:
    G = DEGENERATE["zero_task"]
    for weights in (gm.imtl_g_weights, gm.nash_mtl_weights, gm.aligned_mtl_weights):
        w = weights(G)
        assert w[1] == 0 and (w[[0, 2]] != 0).all()
    alone = gram(torch.stack([g, h]))
    assert torch.allclose(gm.nash_mtl_weights(G)[[0, 2]], gm.nash_mtl_weights(alone))


def test_nash_mtl_opposite_gradients_stay_bounded_and_symmetric() -> None:
    alpha = gm.nash_mtl_weights(DEGENERATE["opposite"])
    assert (alpha > 0).all() and alpha[0].item() == pytest.approx(alpha[1].item())


@pytest.mark.parametrize("method", ALL)
def test_validation_and_dtypes(method: str) -> None:
    weights = ALL[method]
    with pytest.raises(ValueError, match="square"):
        weights(torch.ones(2, 3))
    with pytest.raises(ValueError, match="square"):
        weights(torch.ones(3))
    with pytest.raises(ValueError, match="floating"):
        weights(torch.eye(2, dtype=torch.int64))
    with pytest.raises(FloatingPointError):
        weights(torch.tensor([[1.0, math.nan], [math.nan, 1.0]]))
    G64 = gram(jacobian(3, 0, conflict=True))
    for G in (G64.float(), G64.half(), G64.bfloat16()):
        w = weights(G)
        assert w.dtype == torch.float64 and w.device.type == "cpu" and torch.isfinite(w).all()
    assert torch.allclose(weights(G64.float()), weights(G64), rtol=1e-4, atol=1e-5)
    if torch.cuda.is_available():
        assert torch.allclose(weights(G64.cuda()), weights(G64))
