"""Random and degenerate Jacobians for the oracle tests, by seed."""

from __future__ import annotations

import torch

#: The kinds of Jacobian, one per seed in turn.
KINDS = (
    "random",
    "conflicting",
    "parallel",
    "near_parallel",
    "one_zero",
    "opposite",
    "rank_deficient",
)
SEEDS = range(350)


def case(seed: int) -> tuple[str, torch.Tensor]:
    """``(kind, J)``: T = 2..7 task gradients of 8..40 dimensions, rows of mixed scale."""
    gen = torch.Generator().manual_seed(seed)
    kind = KINDS[seed % len(KINDS)]
    T = 2 + (seed // len(KINDS)) % 6
    dim = 8 + seed % 33

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    scales = torch.exp(randn(T, 1))
    J = randn(T, dim)
    if kind == "conflicting":
        J[1::2] = -J[0:-1:2] + 0.3 * J[1::2]
    elif kind == "parallel":
        J = randn(1, dim).expand(T, dim).clone()
    elif kind == "near_parallel":
        J = randn(1, dim) + 1e-3 * J
    elif kind == "one_zero":
        J[seed % T] = 0.0
    elif kind == "opposite":
        J[1] = -J[0]
    elif kind == "rank_deficient":
        J = randn(T, max(T - 1, 1)) @ randn(max(T - 1, 1), dim)
    return kind, J * scales


def degenerate(kind: str) -> bool:
    return kind not in ("random", "conflicting")
