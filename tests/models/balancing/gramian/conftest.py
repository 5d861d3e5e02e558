"""Random task gradients, shared by the tests of every family of Gramian rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

SIZES_AND_SEEDS = [(T, seed) for T in range(2, 7) for seed in range(3)]


def _jacobian(T: int, seed: int, dim: int = 50, conflict: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    J = torch.randn(T, dim, generator=gen, dtype=torch.float64)
    if conflict:
        J[1::2] = -J[0:-1:2] + 0.3 * J[1::2]
    return J


@pytest.fixture
def jacobian() -> Callable[..., torch.Tensor]:
    """``jacobian(T, seed, dim=50, conflict=False)``: random task gradients (T, dim) in
    float64; ``conflict`` makes pairs nearly opposite."""
    return _jacobian


@pytest.fixture(params=SIZES_AND_SEEDS, ids=lambda p: f"T{p[0]}-seed{p[1]}")
def size_and_seed(request: pytest.FixtureRequest) -> tuple[int, int]:
    """Each (number of tasks, seed) of the sweeps: 2 to 6 tasks, 3 seeds each."""
    return request.param


@pytest.fixture
def sizes_and_seeds() -> list[tuple[int, int]]:
    """The whole sweep at once, for tests that judge it as a set."""
    return SIZES_AND_SEEDS


@pytest.fixture(params=[False, True], ids=["agreeing", "conflicting"])
def conflict(request: pytest.FixtureRequest) -> bool:
    """Random gradients as they come, then with pairs made nearly opposite."""
    return request.param


@pytest.fixture
def sweep_gramian(
    jacobian: Callable[..., torch.Tensor], size_and_seed: tuple[int, int], conflict: bool
) -> tuple[int, int, torch.Tensor]:
    """``(T, seed, G)`` over the sweep; seed 2's gradients span only 4 dimensions, so its
    Gramian is singular for 5 and 6 tasks."""
    T, seed = size_and_seed
    J = jacobian(T, seed, dim=4 if seed == 2 else 50, conflict=conflict)
    return T, seed, J @ J.T
