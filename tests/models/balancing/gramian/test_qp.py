"""The exact active-set QP under the min-norm and dual-cone rules."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from models.balancing.gramian._qp import nonneg_qp


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
