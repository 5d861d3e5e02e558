"""Rules that carry state from step to step: GradVac's cosine targets, MoDo's and SDMGrad's
task weights. Each takes the state and returns it updated; the balancer keeps it."""

from __future__ import annotations

import numpy as np
import torch

from models.balancing.gramian._common import as_numpy, as_torch

__all__ = ["gradvac_weights", "modo_weights", "project_to_simplex", "sdmgrad_weights"]


def project_to_simplex(y: np.ndarray) -> np.ndarray:
    """The Euclidean projection of ``y`` onto ``{x ≥ 0, Σ x = 1}``.

    Sorted descending, the threshold is the first ``(Σ_{k≤i} u_k − 1)/i`` above ``u_{i+1}``
    (else ``(Σ y − 1)/T``): the loop of LibMTL's MoDo and torchjd, in their order of sums, so
    the iterated methods that call it follow them to the last bit for many steps.
    """
    u = np.sort(y)[::-1]
    threshold = (float(y.sum()) - 1.0) / y.size
    total = 0.0
    for i in range(y.size - 1):
        total += u[i]
        candidate = (total - 1.0) / (i + 1.0)
        if candidate > u[i + 1]:
            threshold = candidate
            break
    return np.maximum(y - threshold, 0.0)


def gradvac_weights(
    G: torch.Tensor,
    targets: torch.Tensor,
    generator: torch.Generator,
    beta: float = 0.5,
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GradVac: each gradient pulled towards its EMA cosine target with every other, summed.

    For each task ``i``, the others ``j`` in a random order (``torch.randperm(T − 1)`` from
    ``generator``): with ``φ`` the cosine of the current ``g_i'`` and the original ``g_j`` and
    ``φ̂ = targets[i, j]``, if ``φ < φ̂`` then ``g_i' += w g_j`` with
    ``w = ‖g_i'‖(φ̂√(1−φ²) − φ√(1−φ̂²)) / (‖g_j‖√(1−φ̂²) + eps)``, which sets the cosine to
    ``φ̂``; then ``φ̂ ← (1 − β)φ̂ + βφ``. Every ``g_i' = Σ_k c_ik g_k`` stays a combination of
    the originals, so norms and cosines are quadratic forms of G and the update ``Σ_i g_i'``
    has weights ``w = Cᵀ1``. ``eps`` sits in the denominators as in torchjd (LibMTL has none).
    The targets start at 0 (LibMTL and torchjd); this is LibMTL's ``whole_model`` grouping.

    Wang, Tsvetkov, Firat, Cao. Gradient Vaccine: Investigating and Improving Multi-task
    Optimization in Massively Multilingual Models. ICLR 2021.

    Returns ``(weights, targets)``. Degenerate input: a zero-gradient task has cosine 0 with
    every task and is never corrected towards (its ``g_j = 0``); a zero matrix gives ones.
    """
    A = as_numpy(G)
    T = A.shape[0]
    phi_hat = targets.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    if phi_hat.shape != (T, T):
        raise ValueError(f"targets must have shape ({T}, {T}), got {tuple(targets.shape)}")
    norms = np.sqrt(np.maximum(np.diag(A), 0.0))
    C = np.eye(T)
    for i in range(T):
        cG = C[i] @ A
        others = [j for j in range(T) if j != i]
        order = torch.randperm(T - 1, generator=generator, device=generator.device).tolist()
        for j in (others[k] for k in order):
            norm_i = np.sqrt(max(float(cG @ C[i]), 0.0))
            phi = cG[j] / (norm_i * norms[j] + eps)
            target = phi_hat[i, j]
            if phi < target:
                root_phi = np.sqrt(max(1.0 - phi * phi, 0.0))
                root_target = np.sqrt(max(1.0 - target * target, 0.0))
                w = norm_i * (target * root_phi - phi * root_target)
                w /= norms[j] * root_target + eps
                C[i, j] += w
                cG = cG + w * A[j]
            phi_hat[i, j] = (1.0 - beta) * target + beta * phi
    return as_torch(C.sum(0), G), as_torch(phi_hat, G)


def modo_weights(
    G: torch.Tensor, weights: torch.Tensor, gamma: float = 1e-3, rho: float = 0.1
) -> torch.Tensor:
    """MoDo: one projected gradient step of the task weights, ``λ ← Π_Δ(λ − γ(Gλ + ρλ))``.

    The step descends ``½‖Jᵀλ‖² + ½ρ‖λ‖²`` (MGDA's objective, regularised) and the update is
    ``Jᵀλ`` with the new λ. The paper (and LibMTL) estimate ``Gλ`` from two independent
    batches, ``J₁(J₂ᵀλ)``, and take the update from a third; here G is this batch's Gramian.

    Chen, Fernando, Ying, Chen. Three-Way Trade-Off in Multi-Objective Learning:
    Optimization, Generalization and Conflict-Avoidance. NeurIPS 2023, JMLR 2024.

    Degenerate input: any G gives a point of the simplex; a zero matrix shrinks λ towards
    ``1/T`` (only ρ acts).
    """
    A = as_numpy(G)
    lam = weights.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1)
    if lam.shape != (A.shape[0],):
        raise ValueError(f"weights must have shape ({A.shape[0]},), got {tuple(weights.shape)}")
    return as_torch(project_to_simplex(lam - gamma * (A @ lam + rho * lam)), G)


def sdmgrad_weights(
    G: torch.Tensor,
    weights: torch.Tensor,
    lamda: float = 0.3,
    n_iter: int = 20,
    lr: float = 5.0,
    momentum: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SDMGrad: the update ``Jᵀ(w + λ/T)/(1 + λ)``, ``w`` from ``n_iter`` projected steps.

    With ``Â = G / (mean_t √G_tt)²`` (plus 1e-8, as LibMTL and the official code), ``w`` takes
    ``n_iter`` steps of SGD with momentum (``lr``, ``momentum``, the velocity restarted every
    call, as LibMTL builds a new optimiser) on ``½(w + λ/T)ᵀÂ(w + λ/T)``, each projected
    onto the simplex, from the previous call's ``w``. The paper (and LibMTL) take Â from two
    independent batches and the update from a third; here G is this batch's Gramian.

    Xiao, Ban, Ji. Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms. NeurIPS 2023.

    Returns ``(weights, w)``. Degenerate input: a zero matrix leaves ``w`` where it was.
    """
    A = as_numpy(G)
    T = A.shape[0]
    w = weights.detach().to(device="cpu", dtype=torch.float64).numpy().reshape(-1).copy()
    if w.shape != (T,):
        raise ValueError(f"weights must have shape ({T},), got {tuple(weights.shape)}")
    scale = np.sqrt(np.maximum(np.diag(A), 0.0)).mean()
    A = A / (scale**2 + 1e-8)
    pull = np.full(T, lamda / T)
    velocity = np.zeros(T)
    for _ in range(n_iter):
        velocity = momentum * velocity + A @ (w + pull)
        w = project_to_simplex(w - lr * velocity)
    return as_torch((w + pull) / (1.0 + lamda), G), as_torch(w, G)
