"""Nash-MTL: the bargaining solution, by damped Newton on a strictly convex T-dim problem."""

from __future__ import annotations

import numpy as np
import torch

from models.balancing.gramian._common import as_numpy, as_torch, nonzero_tasks

__all__ = ["nash_mtl_weights"]

#: Nash-MTL's ridge, relative to the mean diagonal of the normalised Gramian: it keeps the
#: bargaining solution bounded when the gradients are linearly dependent (opposite gradients
#: would otherwise send α to infinity) and moves (Gα)_t α_t = 1 by about this much.
NASH_RIDGE = 1e-6


def nash_mtl_weights(
    G: torch.Tensor, init: torch.Tensor | None = None, max_iter: int = 20
) -> torch.Tensor:
    """Nash-MTL: the Nash bargaining solution ``α > 0`` with ``(Gα)_t = 1/α_t`` for all ``t``.

    It is the unique minimiser of the strictly convex ``f(α) = ½αᵀGα − Σ_t log α_t``, found
    by damped Newton (backtracking on ``f`` and keeping ``α > 0``) on ``Ĝ = G/‖G‖_F`` plus a
    ridge of ``NASH_RIDGE`` times its mean diagonal, then scaled back: ``α = α̂/√‖G‖_F``.
    ``init`` (a previous α) warm-starts it; otherwise it starts from ``1/√Ĝ_tt`` rescaled to
    the best multiple. The official code solves a sequence of convex approximations with
    cvxpy on ``Ĝ`` and keeps ``α̂`` (unscaled) while clipping the update's norm; here α is
    the exact solution for G, so that ``‖d‖² = Σ_t α_t (Gα)_t = T``.

    Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya. Multi-Task Learning as a
    Bargaining Game. ICML 2022.

    Degenerate input: tasks with zero gradient get weight 0 and are left out (their α would
    be infinite); an all-zero matrix gives zeros; a single task gives ``1/‖g‖``; linearly
    dependent gradients give the ridge's finite answer (exactly opposite unit gradients:
    ``α_t = 1/√(ridge)`` in normalised units, a zero update).
    """
    if max_iter < 1:
        raise ValueError(f"nash_mtl max_iter must be >= 1, got {max_iter}")
    A = as_numpy(G)
    T = A.shape[0]
    keep = np.flatnonzero(nonzero_tasks(A))
    alpha = np.zeros(T)
    if keep.size == 0:
        return as_torch(alpha)
    K = A[np.ix_(keep, keep)]
    norm = np.linalg.norm(K)
    K = K / norm
    n = keep.size
    K[np.diag_indices(n)] += NASH_RIDGE * np.trace(K) / n

    a = None
    if init is not None:
        start = init.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
        if start.shape != (T,):
            raise ValueError(f"init must have shape ({T},), got {tuple(init.shape)}")
        start = start[keep] * np.sqrt(norm)
        if np.isfinite(start).all() and (start > 0).all():
            a = start
    if a is None:
        a = 1.0 / np.sqrt(np.diag(K))
    # The best multiple of the start: f(s a) is minimal at s² aᵀKa = n.
    a = a * np.sqrt(n / float(a @ K @ a))

    def f(x: np.ndarray) -> float:
        return 0.5 * float(x @ K @ x) - float(np.log(x).sum())

    fa = f(a)
    for _ in range(max_iter):
        Ka = K @ a
        grad = Ka - 1.0 / a
        hess = K + np.diag(1.0 / a**2)
        step = -np.linalg.solve(hess, grad)
        decrement = -float(grad @ step)  # Newton decrement squared
        if decrement <= 1e-20:
            break
        t = 1.0
        # Largest step keeping α > 0, with a margin, then Armijo backtracking.
        shrinking = step < 0
        if shrinking.any():
            t = min(1.0, 0.99 * float(np.min(-a[shrinking] / step[shrinking])))
        while True:
            candidate = a + t * step
            fc = f(candidate)
            if fc <= fa - 0.25 * t * decrement or t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12:
            break
        a, fa = candidate, fc
    alpha[keep] = a / np.sqrt(norm)
    return as_torch(alpha)
