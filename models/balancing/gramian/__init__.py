"""Gradient-balancing rules as pure functions of the Gramian of the task gradients.

Every function here reads ``G = J Jᵀ``, the T×T Gramian of the task gradients ``J`` (row ``t``
is ``g_t = ∇L_t``), and returns weights ``w`` (float64, shape (T,), on G's device) such that the
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

from models.balancing.gramian._fair import config_weights, fairgrad_weights
from models.balancing.gramian._min_norm import (
    cagrad_weights,
    dualproj_weights,
    mgda_weights,
    upgrad_weights,
)
from models.balancing.gramian._nash import nash_mtl_weights
from models.balancing.gramian._projection import (
    aligned_mtl_matrix,
    aligned_mtl_weights,
    imtl_g_weights,
    pcgrad_projections,
    pcgrad_weights,
)
from models.balancing.gramian._stateful import (
    gradvac_weights,
    modo_weights,
    sdmgrad_weights,
)

__all__ = [
    "aligned_mtl_matrix",
    "aligned_mtl_weights",
    "cagrad_weights",
    "config_weights",
    "dualproj_weights",
    "fairgrad_weights",
    "gradvac_weights",
    "modo_weights",
    "imtl_g_weights",
    "mgda_weights",
    "nash_mtl_weights",
    "pcgrad_projections",
    "pcgrad_weights",
    "sdmgrad_weights",
    "upgrad_weights",
]
