"""Gradient-balancing rules as pure functions of the Gramian of the task gradients.

Every function here reads ``G = J Jᵀ``, the T×T Gramian of the task gradients ``J`` (row ``t``
is ``g_t = ∇L_t``), and returns weights ``w`` (float64, shape (T,), on the CPU) such that the
method's update direction is ``d = Σ_t w_t g_t = Jᵀw``. Nothing else of ``J`` is needed: every
inner product and norm the methods use is an entry or a quadratic form of ``G``. This is the
formulation of torchjd's aggregators (Quinton & Rey 2024) and it lets the trainer obtain the
weights from one T×T matrix and backpropagate ``Σ_t w_t L_t`` however it likes.

Inputs may be any symmetric positive semi-definite tensor of any floating dtype and device;
the work is done in numpy float64 because T is at most about ten and torch's per-op overhead
would dominate. Degenerate Gramians (a zero matrix, a task with zero gradient, collinear or
exactly opposite gradients, a single task) always give finite weights; each docstring says
which.
"""

from __future__ import annotations

import numpy as np
import torch

from models.balancing import _qp
from models.balancing._qp import nonneg_qp

__all__ = [
    "aligned_mtl_matrix",
    "aligned_mtl_weights",
    "cagrad_weights",
    "imtl_g_weights",
    "mgda_weights",
    "nash_mtl_weights",
    "pcgrad_projections",
    "pcgrad_weights",
    "upgrad_weights",
]

#: A task whose squared gradient norm ``G_tt`` is at most this fraction of the largest one
#: counts as having zero gradient (float32 gradients resolve about 1e-7 of a norm).
ZERO_GRADIENT = 1e-16


def _to_numpy(G: torch.Tensor, name: str = "G") -> np.ndarray:
    """Validate a Gramian and return it as a symmetric float64 numpy array."""
    if not isinstance(G, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(G).__name__}")
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square (T, T) matrix, got {tuple(G.shape)}")
    if not G.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {G.dtype}")
    A = G.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(A).all():
        raise FloatingPointError(f"{name} has non-finite entries")
    return (A + A.T) / 2


def _to_torch(w: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64))


def _nonzero_tasks(A: np.ndarray) -> np.ndarray:
    """Boolean mask of the tasks whose gradient is not (numerically) zero."""
    diag = np.diag(A)
    top = diag.max()
    return diag > ZERO_GRADIENT * top if top > 0 else np.zeros(diag.shape, dtype=bool)


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
    A = _to_numpy(G)
    return _to_torch(nonneg_qp(A, np.zeros(A.shape[0]), simplex=True))


def pcgrad_projections(G: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad's projected gradients, as coefficients on the original ones.

    Returns C (T, T) with ``g_i' = Σ_j C[i, j] g_j``. For each task ``i`` (in order) a fresh
    random permutation of the tasks is drawn with ``torch.randperm(T, generator=generator)``;
    starting from ``c_i = e_i``, for each ``j ≠ i`` in that order, if the current projection
    conflicts with ``g_j``, ``⟨g_i', g_j⟩ = (G c_i)_j < 0``, it is projected onto the normal
    plane of the *original* ``g_j``: ``c_i ← c_i − (G c_i)_j / G_jj · e_j``.

    Yu, Kumar, Gupta, Levine, Hausman, Finn. Gradient Surgery for Multi-Task Learning.
    NeurIPS 2020.

    Degenerate input: a zero matrix, a single task or non-conflicting gradients give the
    identity; a zero-gradient task is never projected against (it conflicts with none).
    The generator is consumed identically (T permutations) whatever G is.
    """
    A = _to_numpy(G)
    T = A.shape[0]
    diag = np.diag(A)
    nonzero = _nonzero_tasks(A)
    C = np.eye(T)
    for i in range(T):
        order = torch.randperm(T, generator=generator, device=generator.device).tolist()
        ci = C[i]
        for j in order:
            if j == i or not nonzero[j]:
                continue
            dot = float(A[j] @ ci)
            if dot < 0:
                ci[j] -= dot / diag[j]
    return _to_torch(C)


def pcgrad_weights(G: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad: the sum of the projected gradients, ``w = Cᵀ1`` (see :func:`pcgrad_projections`).

    The weights sum to about T, as PCGrad sums (not averages) the projected gradients.

    Yu et al. Gradient Surgery for Multi-Task Learning. NeurIPS 2020.

    Degenerate input: as :func:`pcgrad_projections`; without conflicts all weights are 1.
    """
    return pcgrad_projections(G, generator).sum(0)


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
    A = _to_numpy(G)
    T = A.shape[0]
    divisor = 1.0 + c**2 if rescale else 1.0
    mean = np.full(T, 1.0 / T)
    w = mean.copy() if init is None else _simplex_point(init, T)
    scale = np.trace(A) / T
    phi = c * np.sqrt(max(A.sum(), 0.0)) / T
    if not scale > 0 or phi <= 1e-12 * np.sqrt(scale):
        return _to_torch(mean / divisor), _to_torch(w)

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
        return _to_torch(mean / divisor), _to_torch(w)
    return _to_torch((mean + (phi / s) * w) / divisor), _to_torch(w)


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


def imtl_g_weights(G: torch.Tensor) -> torch.Tensor:
    """IMTL-G: the update with equal projection on every task's unit gradient.

    Finds ``w`` with ``Σ_t w_t = 1`` such that ``d = Jᵀw`` satisfies ``⟨d, u_t⟩ = γ`` for all
    ``t``, ``u_t = g_t/‖g_t‖``, i.e. ``(Gw)_t / ‖g_t‖ = γ``: the (T+1)×(T+1) linear system
    ``[N⁻¹G, −1; 1ᵀ, 0] [w; γ] = [0; 1]``, ``N = diag(‖g_t‖)``, equivalent to the paper's
    closed form ``α = g_1 Uᵀ (D Uᵀ)⁻¹``. Solved by least squares (minimum norm, singular
    values below 1e-10 of the largest dropped) on G scaled to unit mean diagonal, so singular
    cases have a defined, scale-invariant answer.

    Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang. Towards Impartial Multi-task Learning.
    ICLR 2021.

    Degenerate input: a single task gives ``[1.0]``; tasks with zero gradient get weight 0
    and the rest are solved alone; an all-zero matrix gives ``1/T``; exactly opposite
    gradients give ``(½, ½)``; collinear gradients get the least-norm solution.
    """
    A = _to_numpy(G)
    T = A.shape[0]
    keep = np.flatnonzero(_nonzero_tasks(A))
    w = np.zeros(T)
    if keep.size == 0:
        return _to_torch(np.full(T, 1.0 / T))
    if keep.size == 1:
        w[keep] = 1.0
        return _to_torch(w)
    K = A[np.ix_(keep, keep)]
    K = K / (np.trace(K) / keep.size)
    n = keep.size
    system = np.zeros((n + 1, n + 1))
    system[:n, :n] = K / np.sqrt(np.diag(K))[:, None]
    system[:n, n] = -1.0
    system[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    w[keep] = np.linalg.lstsq(system, rhs, rcond=1e-10)[0][:n]
    return _to_torch(w)


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
    A = _to_numpy(G)
    T = A.shape[0]
    keep = np.flatnonzero(_nonzero_tasks(A))
    alpha = np.zeros(T)
    if keep.size == 0:
        return _to_torch(alpha)
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
    return _to_torch(alpha)


def aligned_mtl_matrix(G: torch.Tensor) -> torch.Tensor:
    """Aligned-MTL's alignment matrix ``B`` (T, T): the aligned task gradients are ``BJ``.

    With ``G = VΛVᵀ`` and the eigenvalues above ``1e-10·max λ`` kept (``V_k``, ``Λ_k``),
    ``B = √λ_min · V_k Λ_k^{-1/2} V_kᵀ`` (``λ_min`` the smallest kept). Then
    ``(BJ)(BJ)ᵀ = BGB = λ_min V_k V_kᵀ``: the aligned gradients' non-zero singular values all
    equal ``√λ_min``, so the system has condition number 1. LibMTL's tolerance is
    ``max λ · T · eps`` with float32's eps, about 1e-7·T; float64 Gramians resolve far
    smaller eigenvalues. An all-zero G gives the zero matrix.
    """
    A = _to_numpy(G)
    T = A.shape[0]
    lam, V = np.linalg.eigh(A)
    top = lam.max()
    if not top > 0:
        return _to_torch(np.zeros((T, T)))
    kept = lam > 1e-10 * top
    lam, V = lam[kept], V[:, kept]
    return _to_torch(np.sqrt(lam.min()) * (V / np.sqrt(lam)) @ V.T)


def aligned_mtl_weights(G: torch.Tensor) -> torch.Tensor:
    """Aligned-MTL: the sum of the aligned task gradients, ``w = B1``.

    ``B`` is :func:`aligned_mtl_matrix`; with unit task preferences the update is
    ``Σ_t (BJ)_t = (B1)ᵀJ``. The weights do not depend on G's scale.

    Senushkin, Patakin, Kuznetsov, Konushin. Independent Component Alignment for Multi-Task
    Learning. CVPR 2023 (as implemented in LibMTL).

    Degenerate input: an all-zero matrix gives zeros; a single task gives ``[1.0]``; a
    zero-gradient task gets weight 0; collinear gradients keep one direction (e.g.
    ``g_2 = 2g_1`` gives ``(0.6, 1.2)``); exactly opposite gradients give zeros (their
    aligned gradients cancel).
    """
    return aligned_mtl_matrix(G).sum(1)


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
    A = _to_numpy(G)
    T = A.shape[0]
    if preference is None:
        p = np.full(T, 1.0 / T)
    else:
        p = preference.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
        if p.shape != (T,):
            raise ValueError(f"preference must have shape ({T},), got {tuple(preference.shape)}")
        if not np.isfinite(p).all() or (p < 0).any():
            raise ValueError("preference must be finite and non-negative")
    trace = np.trace(A)
    if not trace > 0:
        return _to_torch(p.copy())
    A = A / trace
    w = np.zeros(T)
    for i in range(T):
        if p[i] == 0:
            continue
        v = nonneg_qp(A, A[:, i], simplex=False)
        v[i] += 1.0
        w += p[i] * v
    return _to_torch(w)
