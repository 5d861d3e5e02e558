"""Nash-MTL: the bargaining solution, by damped Newton on a strictly convex T-dim problem."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.balancing.gramian._common import as_numpy, as_torch, nonzero_tasks
from models.balancing.gramian._qp import nonneg_qp

__all__ = ["nash_mtl_weights"]

#: The bargaining problem has no solution when 0 is in the convex hull of the unit task
#: gradients. With ``m`` the squared min-norm of that hull, ``T = βᵀCβ ≥ m (Σ_t β_t)²`` bounds
#: the weights by ``√(T/m)``; at or below this ``m`` float64 resolves ``β ⊙ (Cβ)`` only to
#: about ``T·1e-6``, and the problem counts as singular. Only then is ``NASH_RIDGE`` added.
NASH_SINGULAR = 1e-10
#: The ridge for singular problems, on the unit-diagonal C. Equal to the threshold, so the
#: weights just below it are of the order of the exact ones just above it.
NASH_RIDGE = NASH_SINGULAR
#: Newton stops once every ``|β_t (Cβ)_t − 1|`` is below this.
NASH_TOL = 1e-12


def nash_mtl_weights(
    G: torch.Tensor, init: torch.Tensor | None = None, max_iter: int = 100
) -> torch.Tensor:
    """Nash-MTL: the Nash bargaining solution ``α > 0`` with ``(Gα)_t = 1/α_t`` for all ``t``.

    It is the unique minimiser of the strictly convex ``f(α) = ½αᵀGα − Σ_t log α_t``. The
    equation is invariant under diagonal scaling: with ``D = diag(√G_tt)`` and the unit-
    diagonal ``C = D⁻¹GD⁻¹``, ``α = D⁻¹β`` where ``β ⊙ (Cβ) = 1``. So the gradients' norms,
    however far apart, do not touch the conditioning; only their angles do. ``β`` is found by
    Newton on ``f`` (damped by backtracking while far off, keeping ``β > 0``) until the
    residual is below ``NASH_TOL``, at most ``max_iter`` steps; warm-started from ``init`` (a
    previous α) or else from ``β = 1``, each rescaled to the best multiple. At the solution
    ``⟨g_t, d⟩ = 1/α_t > 0`` for every task and ``‖d‖² = Σ_t α_t (Gα)_t = T``.

    The official code, and LibMTL after it, solve a sequence of convex approximations with
    cvxpy on ``Ĝ = G/‖G‖_F``, but their constraints ``α_t ‖G‖_F (Ĝα)_t ≥ 1`` carry the
    normalisation back: their α, too, satisfies ``α ⊙ (Gα) = 1`` for G itself, up to their
    solver's accuracy. They then clip the update's norm; here α is the exact solution for G.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. Multi-Task Learning as a
    Bargaining Game. ICML 2022.

    Degenerate input: tasks with zero gradient get weight 0 and are left out (their α would
    be infinite); an all-zero matrix gives zeros; a single task gives ``1/‖g‖``. Collinear
    gradients of one direction have an exact solution (equal ``β``). Only where 0 is in the
    hull of the unit gradients (see ``NASH_SINGULAR``), as for exactly opposite gradients, is
    there no solution; then ``C`` gets a ridge of ``NASH_RIDGE`` and the answer is finite
    (exactly opposite gradients: ``β_t = 1/√NASH_RIDGE``, a zero update).
    """
    if max_iter < 1:
        raise ValueError(f"nash_mtl max_iter must be >= 1, got {max_iter}")
    A = as_numpy(G)
    T = A.shape[0]
    keep = np.flatnonzero(nonzero_tasks(A))
    alpha = np.zeros(T)
    if keep.size == 0:
        return as_torch(alpha, G)
    K = A[np.ix_(keep, keep)]
    scale = np.sqrt(np.diag(K))
    C = K / np.outer(scale, scale)
    n = keep.size
    C[np.diag_indices(n)] = 1.0
    # wᵀCw ≥ λ_min(C)/n on the simplex: the hull's QP is needed only for a near-singular C.
    if n > 1 and np.linalg.eigvalsh(C)[0] <= n * NASH_SINGULAR:
        hull = nonneg_qp(C, np.zeros(n), simplex=True)
        if float(hull @ C @ hull) <= NASH_SINGULAR:
            C[np.diag_indices(n)] += NASH_RIDGE

    b = None
    if init is not None:
        start = init.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
        if start.shape != (T,):
            raise ValueError(f"init must have shape ({T},), got {tuple(init.shape)}")
        start = start[keep] * scale
        if np.isfinite(start).all() and (start > 0).all():
            b = start
    if b is None:
        b = np.ones(n)
    # The best multiple of the start: f(s b) is minimal at s² bᵀCb = n.
    b = b * np.sqrt(n / float(b @ C @ b))
    alpha[keep] = _newton(C, b, max_iter) / scale
    return as_torch(alpha, G)


def _newton(C: np.ndarray, b: np.ndarray, max_iter: int) -> np.ndarray:
    """Minimise ``½bᵀCb − Σ log b`` from ``b > 0`` (C definite, or bounded below)."""

    def f(x: np.ndarray) -> float:
        return 0.5 * float(x @ C @ x) - float(np.log(x).sum())

    fb = f(b)
    previous = np.inf  # the last full step's decrement
    for _ in range(max_iter):
        Cb = C @ b
        if np.abs(b * Cb - 1.0).max() <= NASH_TOL:
            break
        grad = Cb - 1.0 / b
        step = -np.linalg.solve(C + np.diag(1.0 / b**2), grad)
        decrement = -float(grad @ step)  # Newton decrement squared
        if decrement < 1 / 16:
            # Quadratic convergence (λ⁺ ≤ (λ/(1−λ))²): a decrement that stops shrinking is
            # float64's floor. The full step keeps b > 0: |step_t| ≤ √decrement · b_t.
            if not decrement < 0.5 * previous:
                break
            previous = decrement
            b = b + step
            fb = f(b)
            continue
        previous = np.inf
        damped = damped_step(b, fb, step, decrement, f)
        if damped is None:
            break
        b, fb = damped
    return b


def damped_step(
    x: np.ndarray,
    fx: float,
    step: np.ndarray,
    decrement: float,
    f: Callable[[np.ndarray], float],
) -> tuple[np.ndarray, float] | None:
    """A damped Newton step of ``f`` from ``x > 0``: the largest fraction of ``step`` that
    keeps ``x > 0`` (with a margin), halved until Armijo's condition holds; ``None`` once
    the fraction falls below 1e-12 (no progress left to make)."""
    t = 1.0
    shrinking = step < 0
    if shrinking.any():
        t = min(1.0, 0.99 * float(np.min(-x[shrinking] / step[shrinking])))
    while True:
        candidate = x + t * step
        fc = f(candidate)
        if fc <= fx - 0.25 * t * decrement or t < 1e-12:
            break
        t *= 0.5
    if t < 1e-12:
        return None
    return candidate, fc
