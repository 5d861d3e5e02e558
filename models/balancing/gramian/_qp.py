"""A small exact convex QP solver for the Gramian-based balancing methods.

Solves ``min ½ xᵀGx + cᵀx  s.t.  x ≥ 0  (and 1ᵀx = 1)`` for the tiny (T ≤ ~10) problems of
multi-task gradient balancing with a primal active-set method (Nocedal & Wright, *Numerical
Optimization*, 2nd ed., Algorithm 16.3). Pure numpy float64: at this size the interpreter,
not the arithmetic, is the cost, so every iteration is one small dense solve.
"""

from __future__ import annotations

import numpy as np

__all__ = ["nonneg_qp"]

#: Ridge added to G after scaling it to unit mean diagonal: it makes every KKT solve
#: non-singular for singular Gramians (collinear or zero gradients) while moving a
#: solution by about this much relative to its scale.
RIDGE = 1e-12
#: A working-set multiplier below ``-TOL·scale`` releases its constraint; the scale is that
#: of the gradient ``Gx + c`` after normalising.
TOL = 1e-9


def nonneg_qp(G: np.ndarray, c: np.ndarray, simplex: bool) -> np.ndarray:
    """Minimise ``½ xᵀGx + cᵀx`` over ``x ≥ 0`` and, if ``simplex``, ``1ᵀx = 1``.

    ``G`` is a symmetric positive semi-definite (T, T) array, ``c`` a (T,) array. A primal
    active-set method (Nocedal & Wright §16.5): the working set holds the bounds ``x_i = 0``
    taken as equalities, each iteration solves the equality-constrained QP on the free
    variables and either steps to its solution (releasing the bound with the most negative
    multiplier once there) or stops at the first bound it would cross. With G positive
    definite it terminates in finitely many steps; iterations are capped all the same, and
    the returned point is always feasible and finite.

    Singular G is made definite by a ridge of ``RIDGE`` times its mean diagonal, so every
    sub-problem has one finite solution. Where the minimiser is not unique the one returned
    is an exact minimiser (to ``TOL``) that depends on the path: the simplex case starts from
    the barycentre, so e.g. equal gradients split evenly. An all-zero G with a ``c`` that
    makes the problem unbounded (a negative ``c_i`` without ``simplex``) returns the
    ridge-regularised minimiser, huge but finite.
    """
    G = np.asarray(G, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    T = c.shape[0]
    if G.shape != (T, T):
        raise ValueError(f"nonneg_qp: G must be ({T}, {T}) to match c, got {G.shape}")
    if T == 0:
        return np.zeros(0)
    if not (np.isfinite(G).all() and np.isfinite(c).all()):
        raise FloatingPointError("nonneg_qp: non-finite G or c")
    if simplex and T == 1:
        return np.ones(1)

    # Scaling the objective leaves its minimiser alone and makes the tolerances absolute.
    scale = np.trace(G) / T
    if not scale > 0:
        scale = max(float(np.abs(c).max()), 1.0)
    G = (G + G.T) / (2 * scale) + RIDGE * np.eye(T)
    c = c / scale
    tol = TOL * (1.0 + float(np.abs(c).max()))

    if simplex:
        # Start at the barycentre with no bound in the working set: an interior optimum (the
        # common case) is then one solve away, and ties are broken symmetrically.
        x = np.full(T, 1.0 / T)
        active = np.zeros(T, dtype=bool)
    else:
        x = np.zeros(T)
        active = np.ones(T, dtype=bool)

    for _ in range(10 * T + 20):
        free = np.flatnonzero(~active)
        target = np.zeros(T)
        if free.size:
            target[free] = _solve_free(G, c, free, simplex)

        step = target - x
        blocking = free[(step[free] < 0) & (target[free] < 0)]
        if blocking.size:
            # Walk towards the sub-problem's solution until the first bound is hit.
            ratios = x[blocking] / (x[blocking] - target[blocking])
            j = int(np.argmin(ratios))
            alpha = min(max(float(ratios[j]), 0.0), 1.0)
            x = x + alpha * step
            x[blocking[j]] = 0.0
            active[blocking[j]] = True
            continue

        x = target
        grad = G @ x + c
        # Multipliers of the working-set bounds: μ = ∇f + ν·1 with ν from the free rows.
        nu = -float(grad[free].mean()) if (simplex and free.size) else 0.0
        mu = np.where(active, grad + nu, np.inf)
        i = int(np.argmin(mu))
        if mu[i] >= -tol:
            break
        active[i] = False

    x = np.maximum(x, 0.0)
    if simplex:
        total = x.sum()
        x = x / total if total > 0 else np.full(T, 1.0 / T)
    return x


def _solve_free(G: np.ndarray, c: np.ndarray, free: np.ndarray, simplex: bool) -> np.ndarray:
    """The minimiser over the free variables, the others held at 0 (one KKT solve)."""
    Gff = G[np.ix_(free, free)]
    if not simplex:
        rhs = -c[free]
        try:
            return np.linalg.solve(Gff, rhs)
        except np.linalg.LinAlgError:
            return np.linalg.lstsq(Gff, rhs, rcond=None)[0]
    n = free.size
    kkt = np.empty((n + 1, n + 1))
    kkt[:n, :n] = Gff
    kkt[:n, n] = 1.0
    kkt[n, :n] = 1.0
    kkt[n, n] = 0.0
    rhs = np.empty(n + 1)
    rhs[:n] = -c[free]
    rhs[n] = 1.0
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:n]
