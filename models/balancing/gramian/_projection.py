"""Projection rules: PCGrad's surgery, IMTL-G's equal projections, Aligned-MTL's alignment."""

from __future__ import annotations

import numpy as np
import torch

from models.balancing.gramian._common import as_numpy, as_torch, nonzero_tasks

__all__ = [
    "pcgrad_projections",
    "pcgrad_weights",
    "imtl_g_weights",
    "aligned_mtl_matrix",
    "aligned_mtl_weights",
]


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
    A = as_numpy(G)
    T = A.shape[0]
    diag = np.diag(A)
    nonzero = nonzero_tasks(A)
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
    return as_torch(C, G)


def pcgrad_weights(G: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad: the sum of the projected gradients, ``w = Cᵀ1`` (see :func:`pcgrad_projections`).

    The weights sum to about T, as PCGrad sums (not averages) the projected gradients.

    Yu et al. Gradient Surgery for Multi-Task Learning. NeurIPS 2020.

    Degenerate input: as :func:`pcgrad_projections`; without conflicts all weights are 1.
    """
    return pcgrad_projections(G, generator).sum(0)


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
    A = as_numpy(G)
    T = A.shape[0]
    keep = np.flatnonzero(nonzero_tasks(A))
    w = np.zeros(T)
    if keep.size == 0:
        return as_torch(np.full(T, 1.0 / T), G)
    if keep.size == 1:
        w[keep] = 1.0
        return as_torch(w, G)
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
    return as_torch(w, G)


def aligned_mtl_matrix(G: torch.Tensor) -> torch.Tensor:
    """Aligned-MTL's alignment matrix ``B`` (T, T): the aligned task gradients are ``BJ``.

    With ``G = VΛVᵀ`` and the eigenvalues above ``1e-10·max λ`` kept (``V_k``, ``Λ_k``),
    ``B = √λ_min · V_k Λ_k^{-1/2} V_kᵀ`` (``λ_min`` the smallest kept). Then
    ``(BJ)(BJ)ᵀ = BGB = λ_min V_k V_kᵀ``: the aligned gradients' non-zero singular values all
    equal ``√λ_min``, so the system has condition number 1. LibMTL's tolerance is
    ``max λ · T · eps`` with float32's eps, about 1e-7·T; float64 Gramians resolve far
    smaller eigenvalues. An all-zero G gives the zero matrix.
    """
    A = as_numpy(G)
    T = A.shape[0]
    lam, V = np.linalg.eigh(A)
    top = lam.max()
    if not top > 0:
        return as_torch(np.zeros((T, T)), G)
    kept = lam > 1e-10 * top
    lam, V = lam[kept], V[:, kept]
    return as_torch(np.sqrt(lam.min()) * (V / np.sqrt(lam)) @ V.T, G)


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
