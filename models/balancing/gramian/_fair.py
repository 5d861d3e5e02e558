"""FairGrad's α-fair allocation and ConFIG's conflict-free direction, as functions of G."""

from __future__ import annotations

import numpy as np
import torch

from models.balancing.gramian._common import as_numpy, as_torch, nonzero_tasks
from models.balancing.gramian._nash import NASH_RIDGE, NASH_SINGULAR, damped_step
from models.balancing.gramian._qp import nonneg_qp

__all__ = ["config_weights", "fairgrad_weights"]

#: Newton stops once every ``|(Gw)_t · w_t^{1/α} − 1|`` is below this.
FAIRGRAD_TOL = 1e-12
#: ConFIG drops the eigenvalues of the unit gradients' Gramian below this fraction of the
#: largest: they are float64 noise of gradients that are exactly dependent.
CONFIG_RCOND = 1e-13
#: A summed length below this fraction of the summed gradient norms is rounding: zero update.
CONFIG_ZERO = 1e-12


def fairgrad_weights(G: torch.Tensor, alpha: float = 1.0, max_iter: int = 100) -> torch.Tensor:
    """FairGrad: the α-fair allocation ``w > 0`` with ``(Gw)_t = w_t^{−1/α}`` for all ``t``.

    The update ``d = Jᵀw`` gives each task the utility ``⟨g_t, d⟩ = w_t^{−1/α}``, the optimum
    of α-fair resource allocation (Eq. 4 of the paper). ``w`` is the unique minimiser of the
    strictly convex ``f(w) = ½wᵀGw − Σ_t φ(w_t)`` with ``φ' = w^{−1/α}``; it is found by damped
    Newton on G scaled to unit mean diagonal (``(kG)`` has the solution ``k^{−α/(1+α)} w``), to
    a relative residual of ``FAIRGRAD_TOL``. ``α = 1`` is Nash-MTL's bargaining solution; ``α =
    0`` is linear scalarisation, ``1/T`` (as torchjd). The official code and LibMTL solve the
    same equation with scipy's ``least_squares`` from ``1/T``, to its default tolerance 1e-8.

    Ban, Ji. Fair Resource Allocation in Multi-Task Learning. ICML 2024.

    Degenerate input: tasks with zero gradient get weight 0 (their equation has no solution);
    an all-zero matrix gives zeros; where 0 is in the hull of the unit gradients (exactly
    opposite gradients) there is no solution and the scaled G gets Nash-MTL's ridge, so the
    weights are large but finite.
    """
    if not alpha >= 0:
        raise ValueError(f"fairgrad alpha must be >= 0, got {alpha}")
    if max_iter < 1:
        raise ValueError(f"fairgrad max_iter must be >= 1, got {max_iter}")
    A = as_numpy(G)
    T = A.shape[0]
    if alpha == 0:
        return as_torch(np.full(T, 1.0 / T), G)
    keep = np.flatnonzero(nonzero_tasks(A))
    w = np.zeros(T)
    if keep.size == 0:
        return as_torch(w, G)
    K = A[np.ix_(keep, keep)]
    n = keep.size
    scale = np.trace(K) / n
    K = K / scale
    norms = np.sqrt(np.diag(K))
    C = K / np.outer(norms, norms)
    if n > 1 and np.linalg.eigvalsh(C)[0] <= n * NASH_SINGULAR:
        hull = nonneg_qp(C, np.zeros(n), simplex=True)
        if float(hull @ C @ hull) <= NASH_SINGULAR:
            K = K + NASH_RIDGE * np.diag(np.diag(K))
    w[keep] = _fair_newton(K, 1.0 / alpha, max_iter) * scale ** (-alpha / (1 + alpha))
    return as_torch(w, G)


def _fair_newton(K: np.ndarray, p: float, max_iter: int) -> np.ndarray:
    """Minimise ``½xᵀKx − Σ φ(x)``, ``φ'(x) = x^{−p}``, over ``x > 0`` by damped Newton."""

    def phi(x: np.ndarray) -> float:
        if p == 1:
            return float(np.log(x).sum())
        return float((x ** (1 - p)).sum() / (1 - p))

    def f(x: np.ndarray) -> float:
        return 0.5 * float(x @ K @ x) - phi(x)

    n = K.shape[0]
    x = np.ones(n)
    # The best multiple of 1 for the quadratic and the power term: s^{1+p} 1ᵀK1 = n.
    x *= (n / max(float(x @ K @ x), 1e-300)) ** (1 / (1 + p))
    fx = f(x)
    previous = np.inf  # the last full step's decrement
    for _ in range(max_iter):
        Kx = K @ x
        if np.abs(Kx * x**p - 1.0).max() <= FAIRGRAD_TOL:
            break
        grad = Kx - x ** (-p)
        step = -np.linalg.solve(K + np.diag(p * x ** (-p - 1)), grad)
        decrement = -float(grad @ step)
        full = x + step
        if decrement < 1e-6 and (full > 0).all():
            # Newton's quadratic phase, where f no longer resolves the progress: full steps
            # while the decrement keeps shrinking (it stops at float64's floor).
            if not decrement < 0.5 * previous:
                break
            previous = decrement
            x, fx = full, f(full)
            continue
        previous = np.inf
        damped = damped_step(x, fx, step, decrement, f)
        if damped is None:
            break
        x, fx = damped
    return x


def config_weights(G: torch.Tensor, preference: torch.Tensor | None = None) -> torch.Tensor:
    """ConFIG: the direction with equal cosine to every task gradient, at the summed length.

    With unit gradients ``U = N⁻¹J`` (``N = diag(‖g_t‖)``), ConFIG takes ``v = U⁺p`` (``p``
    the preference, default all 1), whose projections on the unit gradients are as equal as
    least squares can make them, and scales its unit vector ``v̂`` to ``Σ_t ⟨g_t, v̂⟩``. As
    ``U⁺ = Uᵀ(UUᵀ)⁺`` and ``UUᵀ = C`` is the cosine matrix, ``v = Jᵀ N⁻¹C⁺p``: with
    ``u = N⁻¹C⁺p`` the weights are ``w = (1ᵀGu / uᵀGu) u``. ``C⁺`` drops the eigenvalues
    below ``CONFIG_RCOND`` of the largest (torchjd's ``pinv`` of U drops singular values below
    ``max(T, dim)·eps``).

    Liu, Chu, Thuerey. ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks. ICLR 2025 (as torchjd's ConFIG).

    Degenerate input: a zero-gradient task gets weight 0 (its unit gradient is 0, as
    torchjd's ``nan_to_num``); an all-zero matrix, or a direction with zero summed length
    (exactly opposite gradients), gives zeros; collinear gradients of one direction give
    their sum; where the weights are not unique (rank-deficient G) the minimum-norm ``C⁺p``
    is taken, so the update ``Jᵀw`` is torchjd's.
    """
    A = as_numpy(G)
    T = A.shape[0]
    p = np.ones(T)
    if preference is not None:
        p = preference.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
        if p.shape != (T,) or not np.isfinite(p).all():
            raise ValueError(
                f"preference must be {T} finite numbers, got {tuple(preference.shape)}"
            )
    keep = nonzero_tasks(A)
    inverse = np.where(keep, 1.0 / np.sqrt(np.where(keep, np.diag(A), 1.0)), 0.0)
    C = A * np.outer(inverse, inverse)
    lam, V = np.linalg.eigh(C)
    top = lam.max()
    if not top > 0:
        return as_torch(np.zeros(T), G)
    kept = lam > CONFIG_RCOND * top
    coefficients = V[:, kept].T @ p
    # A component of p at rounding level is noise (p orthogonal to an eigenvector, as for
    # exactly opposite gradients), however small its eigenvalue: it is dropped.
    coefficients[np.abs(coefficients) <= CONFIG_ZERO * np.linalg.norm(p)] = 0.0
    u = inverse * (V[:, kept] @ (coefficients / lam[kept]))
    norm_sq = float(u @ A @ u)
    if not norm_sq > 0:
        return as_torch(np.zeros(T), G)
    # The summed length Σ_t ⟨g_t, v̂⟩; at float64's rounding of the gradients' norms it is 0,
    # and v̂ is then the direction of rounding noise (exactly opposite gradients).
    length = float((A @ u).sum()) / np.sqrt(norm_sq)
    if abs(length) <= CONFIG_ZERO * float(np.sqrt(np.maximum(np.diag(A), 0.0)).sum()):
        return as_torch(np.zeros(T), G)
    return as_torch((length / np.sqrt(norm_sq)) * u, G)
