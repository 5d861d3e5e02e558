"""Min-norm and dual-cone rules: MGDA, CAGrad, UPGrad and DualProj, each a small QP on G."""

from __future__ import annotations

import numpy as np
import torch

from models.balancing.gramian import _qp
from models.balancing.gramian._common import as_numpy, as_torch
from models.balancing.gramian._qp import nonneg_qp

__all__ = ["mgda_weights", "cagrad_weights", "dualproj_weights", "upgrad_weights"]


def mgda_weights(G: torch.Tensor) -> torch.Tensor:
    """MGDA: the minimum-norm point of the convex hull of the task gradients.

    ``w = argmin_{w ∈ Δ} wᵀGw`` with ``Δ = {w ≥ 0, Σ_t w_t = 1}``, solved exactly by the
    active-set QP (the original uses Frank-Wolfe). The update ``d = Jᵀw`` is then a common
    descent direction: ``⟨g_t, d⟩ ≥ ‖d‖²`` for every task.

    Sener & Koltun. Multi-Task Learning as Multi-Objective Optimization. NeurIPS 2018.

    Degenerate input: a single task gives ``[1.0]``; a zero matrix gives uniform ``1/T`` (the
    least-norm minimiser); a task with zero gradient takes (all of) the weight, since ``0``
    is then in the hull and the true MGDA update is zero; equal gradients share evenly and
    exactly opposite ones give ``(½, ½)``.
    """
    A = as_numpy(G)
    return as_torch(nonneg_qp(A, np.zeros(A.shape[0]), simplex=True), G)


def cagrad_weights(
    G: torch.Tensor, c: float = 0.5, rescale: bool = True, init: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAGrad: the best worst-task improvement within a ball around the mean gradient.

    With ``g0 = Jᵀ1/T`` the mean gradient, CAGrad takes ``max_d min_t ⟨g_t, d⟩`` subject to
    ``‖d − g0‖ ≤ c‖g0‖``. Its dual is ``w* = argmin_{w ∈ Δ} wᵀb + φ √(wᵀGw)`` with ``b = G1/T``
    and ``φ = c‖g0‖ = c √(1ᵀG1)/T``, and then ``d = g0 + (φ/‖g_w‖) g_w`` with
    ``g_w = Jᵀw*``, i.e. weights ``1/T + (φ/‖g_w‖) w*``, divided by ``1 + c²`` if
    ``rescale`` (the official code's ``rescale=1``).

    The dual is solved by majorise-minimise: ``√q ≤ q/(2s) + s/2`` at ``s = √(w_kᵀGw_k)``
    turns each step into a simplex QP, solved exactly by the active-set solver; at most 50
    steps, stopping at a relative change of ``s`` below 1e-10. Since MM converges only
    linearly, after each step the fixed point on that step's support is solved in closed form
    (a quadratic in ``s``) and taken if it passes the KKT test, which usually ends it after
    one QP. ``init`` (a previous ``w*``) warm-starts it; the official code solves the same
    dual with SLSQP from ``1/T``.

    Liu, Liu, Jin, Stone, Liu. Conflict-Averse Gradient Descent for Multi-task Learning.
    NeurIPS 2021.

    Returns ``(weights, w_star)``; pass ``w_star`` back as ``init`` on the next step.

    Degenerate input: ``c = 0`` or a zero mean gradient (zero matrix, exactly opposite
    gradients) give the mean, ``1/T`` (over ``1 + c²`` if rescaled); so does ``‖g_w‖ ≈ 0``
    (below 1e-6 of the RMS task-gradient norm, e.g. with 0 in the gradients' convex hull).
    A single task gives ``(1 + c)/(1 + c²)``, the formula's value (``d = (1 + c) g``).
    """
    if c < 0:
        raise ValueError(f"cagrad c must be >= 0, got {c}")
    A = as_numpy(G)
    T = A.shape[0]
    divisor = 1.0 + c**2 if rescale else 1.0
    mean = np.full(T, 1.0 / T)
    w = mean.copy() if init is None else _simplex_point(init, T)
    scale = np.trace(A) / T
    phi = c * np.sqrt(max(A.sum(), 0.0)) / T
    if not scale > 0 or phi <= 1e-12 * np.sqrt(scale):
        return as_torch(mean / divisor, G), as_torch(w, G)

    b = A.sum(1) / T
    s = np.sqrt(max(float(w @ A @ w), 0.0))
    floor = 1e-12 * np.sqrt(scale)
    for _ in range(50):
        # Majoriser at s: min wᵀb + φ(wᵀGw/(2s) + s/2), the same minimiser as ½wᵀGw + (s/φ)bᵀw.
        w = nonneg_qp(A, (max(s, floor) / phi) * b, simplex=True)
        s_new = np.sqrt(max(float(w @ A @ w), 0.0))
        converged = abs(s_new - s) <= 1e-10 * max(s_new, floor)
        s = s_new
        if converged:
            break
        jump = _cagrad_fixed_point(A, b, phi, w > 0, scale)
        if jump is not None:
            w, s = jump
            break
    # ‖g_w‖ is only resolved to about √eps of the gradients' norm; below that g_w is noise.
    if s <= 1e-6 * np.sqrt(scale):
        return as_torch(mean / divisor, G), as_torch(w, G)
    return as_torch((mean + (phi / s) * w) / divisor, G), as_torch(w, G)


def _cagrad_fixed_point(
    A: np.ndarray, b: np.ndarray, phi: float, support: np.ndarray, scale: float
) -> tuple[np.ndarray, float] | None:
    """The MM fixed point on a given support, if it is the optimum; else None.

    On a fixed support F the simplex QP's solution is affine in ``t = s/φ``,
    ``w_F = w0 + t·w1``, so ``s² = wᵀGw`` is a quadratic equation in ``s``: solving it jumps
    straight to the limit of the MM iterations (which otherwise converge only linearly).
    The jump is taken only if it passes the QP's KKT test at that ``s``, which makes it the
    optimum of the dual.
    """
    free = np.flatnonzero(support)
    n = free.size
    T = A.shape[0]
    ridged = A + _qp.RIDGE * scale * np.eye(T)
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = ridged[np.ix_(free, free)]
    kkt[:n, n] = 1.0
    kkt[n, :n] = 1.0
    rhs = np.zeros((n + 1, 2))
    rhs[n, 0] = 1.0
    rhs[:n, 1] = -b[free]
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        return None
    w0 = np.zeros(T)
    w1 = np.zeros(T)
    w0[free], w1[free] = sol[:n, 0], sol[:n, 1]
    a0, a1, a2 = float(w0 @ A @ w0), float(w0 @ A @ w1), float(w1 @ A @ w1)
    # s² = a0 + 2·a1·s/φ + a2·s²/φ²; only a positive leading coefficient has one root s > 0.
    lead = 1.0 - a2 / phi**2
    if not lead > 1e-12:
        return None
    s = (a1 / phi + np.sqrt(max((a1 / phi) ** 2 + lead * a0, 0.0))) / lead
    if not s > 0:
        return None
    w = w0 + (s / phi) * w1
    tol = 1e-9
    if (w[free] < -tol).any():
        return None
    w = np.maximum(w, 0.0)
    w /= w.sum()
    # KKT of min ½wᵀGw + (s/φ)bᵀw on the simplex: equal gradients on F, none lower outside.
    grad = (ridged @ w + (s / phi) * b) / scale
    level = grad[free].mean()
    if (grad < level - tol * (1.0 + np.abs(grad).max())).any():
        return None
    return w, float(np.sqrt(max(float(w @ A @ w), 0.0)))


def _simplex_point(init: torch.Tensor, T: int) -> np.ndarray:
    w = init.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
    if w.shape != (T,):
        raise ValueError(f"init must have shape ({T},), got {tuple(init.shape)}")
    w = np.where(np.isfinite(w), np.maximum(w, 0.0), 0.0)
    total = w.sum()
    return w / total if total > 0 else np.full(T, 1.0 / T)


def upgrad_weights(G: torch.Tensor, preference: torch.Tensor | None = None) -> torch.Tensor:
    """UPGrad: the preference-weighted sum of each gradient projected onto the dual cone.

    For each task ``i``, ``v_i = argmin_{v ≥ e_i} vᵀGv``: the weights of the projection of
    ``g_i`` onto the dual cone ``{d : ⟨g_t, d⟩ ≥ 0 ∀t}`` (its KKT conditions give
    ``Gv_i ≥ 0``). Substituting ``v = e_i + x`` makes it ``nonneg_qp(G, Ge_i)``. The weights
    are ``w = Σ_i p_i v_i`` with the preference ``p`` (default ``1/T``; non-negative), so
    ``⟨g_t, Jᵀw⟩ ≥ 0`` for every task. G is normalised by its trace first (the v's do not
    depend on G's scale); the QP's ridge (1e-12 of the mean diagonal) keeps it definite.
    torchjd's default ridge is larger, 1e-4.

    Quinton, Rey. Jacobian Descent for Multi-Objective Optimization. 2024 (torchjd's UPGrad).

    Degenerate input: a single task gives ``[p_1]`` (``[1.0]`` by default); a zero matrix or
    non-conflicting gradients give ``p``; a zero-gradient task keeps ``p_i`` (no projection
    moves it); exactly opposite gradients give ``(1, 1)`` (each projects to ``0 = g_1 + g_2``),
    a zero update.
    """
    A = as_numpy(G)
    T = A.shape[0]
    p = _preference(preference, T)
    trace = np.trace(A)
    if not trace > 0:
        return as_torch(p.copy(), G)
    A = A / trace
    w = np.zeros(T)
    for i in range(T):
        if p[i] == 0:
            continue
        w += p[i] * _dual_cone_weights(A, np.eye(T)[i])
    return as_torch(w, G)


def dualproj_weights(G: torch.Tensor, preference: torch.Tensor | None = None) -> torch.Tensor:
    """DualProj: the preference-weighted mean gradient projected once onto the dual cone.

    With ``u = p`` (default ``1/T``, so ``Jᵀu`` is the mean gradient), the update is the
    projection of ``Jᵀu`` onto ``{d : ⟨g_t, d⟩ ≥ 0 ∀t}``: ``min ½‖d − Jᵀu‖²`` subject to
    ``Jd ≥ 0``. Its Lagrangian dual over the multipliers ``λ ≥ 0`` of ``Jd ≥ 0`` gives
    ``d = Jᵀ(u + λ)`` with ``λ = argmin_{λ ≥ 0} ½(u + λ)ᵀG(u + λ)``, i.e.
    ``nonneg_qp(G, Gu)``, so ``w = u + λ`` and ``Gw ≥ 0`` (the KKT conditions). UPGrad
    solves the same QP with ``u = e_i`` for each task and averages; DualProj solves it once.
    G is normalised by its trace and the QP's ridge (1e-12 of the mean diagonal) keeps it
    definite, as in :func:`upgrad_weights`. torchjd's default ridge, 1e-4 on the
    trace-normalised G, changes the projection itself where G's smallest eigenvalues are
    below about that (nearly opposite gradients); with ``reg_eps = 1e-12/T`` and
    ``norm_eps = 0`` torchjd gives these weights.

    Quinton, Rey. Jacobian Descent for Multi-Objective Optimization. 2024 (torchjd's
    DualProj).

    Degenerate input: a single task gives ``[p_1]`` (``[1.0]`` by default); a zero matrix,
    or gradients whose mean already lies in the cone (``Gp ≥ 0``: no conflict, collinear
    gradients, a zero mean), give ``p``; a zero-gradient task keeps ``p_i`` (its multiplier
    has nothing to correct); exactly opposite gradients give ``(½, ½)``, a zero update.
    Where the weights of the projection are not unique (rank-deficient G), the ridge picks
    the smallest multipliers ``λ``.
    """
    A = as_numpy(G)
    p = _preference(preference, A.shape[0])
    trace = np.trace(A)
    if not trace > 0:
        return as_torch(p.copy(), G)
    return as_torch(_dual_cone_weights(A / trace, p), G)


def _dual_cone_weights(A: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Weights of the projection of ``Jᵀu`` onto the dual cone: ``u + argmin_{λ≥0} ½(u+λ)ᵀA(u+λ)``.

    Expanding the objective leaves ``½λᵀAλ + (Au)ᵀλ`` plus a constant, the non-negative QP.
    """
    return u + nonneg_qp(A, A @ u, simplex=False)


def _preference(preference: torch.Tensor | None, T: int) -> np.ndarray:
    """The preference as a finite, non-negative float64 (T,) array; ``1/T`` if None."""
    if preference is None:
        return np.full(T, 1.0 / T)
    p = preference.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
    if p.shape != (T,):
        raise ValueError(f"preference must have shape ({T},), got {tuple(preference.shape)}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("preference must be finite and non-negative")
    return p
