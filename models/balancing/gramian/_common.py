"""What every rule shares: validating a Gramian and moving it between torch and numpy."""

from __future__ import annotations

import numpy as np
import torch

#: A task whose squared gradient norm ``G_tt`` is at most this fraction of the largest one
#: counts as having zero gradient (float32 gradients resolve about 1e-7 of a norm).
ZERO_GRADIENT = 1e-16


def as_numpy(G: torch.Tensor, name: str = "G") -> np.ndarray:
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


def as_torch(w: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Weights back on the device of the Gramian ``like`` they were solved from."""
    return torch.from_numpy(np.ascontiguousarray(w, dtype=np.float64)).to(like.device)


def nonzero_tasks(A: np.ndarray) -> np.ndarray:
    """Boolean mask of the tasks whose gradient is not (numerically) zero."""
    diag = np.diag(A)
    top = diag.max()
    return diag > ZERO_GRADIENT * top if top > 0 else np.zeros(diag.shape, dtype=bool)
