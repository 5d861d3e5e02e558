"""What every Gramian rule shares: degenerate input, validation and dtypes."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from models.balancing import gramian as gm


def mgda(G: torch.Tensor) -> torch.Tensor:
    return gm.mgda_weights(G)


def pcgrad(G: torch.Tensor) -> torch.Tensor:
    return gm.pcgrad_weights(G, torch.Generator().manual_seed(0))


def cagrad(G: torch.Tensor) -> torch.Tensor:
    return gm.cagrad_weights(G)[0]


ALL: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mgda": mgda,
    "pcgrad": pcgrad,
    "cagrad": cagrad,
    "imtl_g": gm.imtl_g_weights,
    "nash_mtl": gm.nash_mtl_weights,
    "aligned_mtl": gm.aligned_mtl_weights,
    "upgrad": gm.upgrad_weights,
}


def gram(*gradients: torch.Tensor) -> torch.Tensor:
    J = torch.stack(gradients)
    return J @ J.T


g = torch.tensor([1.0, 2.0, -2.0])
h = torch.tensor([0.0, 1.0, 1.0])
DEGENERATE = {
    "zero": torch.zeros(3, 3),
    "zero_task": gram(g, torch.zeros(3), h),
    "collinear": gram(g, 2 * g),
    "equal": gram(g, g),
    "opposite": gram(g, -g),
    "one_task": gram(g),
    "hull_contains_zero": gram(g, h, -g - h),
}
#: What each docstring promises; None where only finiteness is promised.
PROMISED: dict[str, dict[str, list[float] | None]] = {
    "mgda": {
        "zero": [1 / 3] * 3,
        "zero_task": [0, 1, 0],
        "collinear": [1, 0],
        "equal": [0.5, 0.5],
        "opposite": [0.5, 0.5],
        "one_task": [1],
        "hull_contains_zero": [1 / 3] * 3,
    },
    "pcgrad": {"zero": [1, 1, 1], "collinear": [1, 1], "equal": [1, 1], "one_task": [1]},
    "cagrad": {
        "zero": [0.8 / 3] * 3,
        "opposite": [0.4, 0.4],
        "one_task": [1.5 / 1.25],
        "hull_contains_zero": [0.8 / 3] * 3,
    },
    "imtl_g": {"zero": [1 / 3] * 3, "opposite": [0.5, 0.5], "equal": [0.5, 0.5], "one_task": [1]},
    "nash_mtl": {"zero": [0, 0, 0], "one_task": [1 / 3]},
    "aligned_mtl": {
        "zero": [0, 0, 0],
        "collinear": [0.6, 1.2],
        "opposite": [0, 0],
        "one_task": [1],
    },
    "upgrad": {
        "zero": [1 / 3] * 3,
        "zero_task": [1 / 3] * 3,
        "collinear": [0.5, 0.5],
        "opposite": [1, 1],
        "one_task": [1],
    },
}


@pytest.mark.parametrize("case", DEGENERATE)
@pytest.mark.parametrize("method", ALL)
def test_degenerate_input_gives_promised_finite_weights(method: str, case: str) -> None:
    G = DEGENERATE[case]
    w = ALL[method](G)
    assert w.dtype == torch.float64 and w.device.type == "cpu" and w.shape == (G.shape[0],)
    assert torch.isfinite(w).all()
    expected = PROMISED[method].get(case)
    if expected is not None:
        assert torch.allclose(w, torch.tensor(expected, dtype=torch.float64), atol=1e-6)


def test_zero_gradient_task_gets_zero_weight_where_promised() -> None:
    G = DEGENERATE["zero_task"]
    for weights in (gm.imtl_g_weights, gm.nash_mtl_weights, gm.aligned_mtl_weights):
        w = weights(G)
        assert w[1] == 0 and (w[[0, 2]] != 0).all()
    alone = gram(g, h)
    assert torch.allclose(gm.nash_mtl_weights(G)[[0, 2]], gm.nash_mtl_weights(alone))


@pytest.mark.parametrize("method", ALL)
def test_validation_and_dtypes(jacobian: Callable[..., torch.Tensor], method: str) -> None:
    weights = ALL[method]
    with pytest.raises(ValueError, match="square"):
        weights(torch.ones(2, 3))
    with pytest.raises(ValueError, match="square"):
        weights(torch.ones(3))
    with pytest.raises(ValueError, match="floating"):
        weights(torch.eye(2, dtype=torch.int64))
    with pytest.raises(FloatingPointError):
        weights(torch.tensor([[1.0, math.nan], [math.nan, 1.0]]))
    J = jacobian(3, 0, conflict=True)
    G64 = J @ J.T
    for G in (G64.float(), G64.half(), G64.bfloat16()):
        w = weights(G)
        assert w.dtype == torch.float64 and w.device.type == "cpu" and torch.isfinite(w).all()
    assert torch.allclose(weights(G64.float()), weights(G64), rtol=1e-4, atol=1e-5)
    if torch.cuda.is_available():
        assert torch.allclose(weights(G64.cuda()), weights(G64))
