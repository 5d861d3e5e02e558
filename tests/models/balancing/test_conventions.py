"""The reference code's conventions offered as options: DTP's KPI smoothing, AMTL's
overshoot, DB-MTL's momentum decay, Nash-MTL's update clipping."""

from __future__ import annotations

import math

import pytest
import torch

from models import balancing

POTENTIALS = {"a": 0.8, "b": 0.5}


def _dtp(kappa: float, gamma: float) -> float:
    return -((1 - kappa) ** gamma) * math.log(kappa)


def test_dtp_smooths_each_kpi_with_momentum_point_one_by_default() -> None:
    assert balancing.defaults("dtp")["kpi_ema"] == 0.1
    dtp = balancing.create("dtp", ["a", "b"])
    dtp.update_kpis({"a": 0.2, "b": 0.9})
    dtp.update_kpis({"a": 0.6, "b": 0.3})
    smoothed = [0.1 * 0.6 + 0.9 * 0.2, 0.1 * 0.3 + 0.9 * 0.9]
    expected = torch.tensor([_dtp(k, 0.5) for k in smoothed])
    assert torch.allclose(dtp.weights(torch.ones(2)), expected, rtol=1e-6)
    # The latest KPI alone gives the opposite order: b is now the weaker task.
    latest = balancing.create("dtp", ["a", "b"], kpi_ema=1.0)
    latest.update_kpis({"a": 0.2, "b": 0.9})
    latest.update_kpis({"a": 0.6, "b": 0.3})
    w = latest.weights(torch.ones(2))
    assert torch.allclose(w, torch.tensor([_dtp(0.6, 0.5), _dtp(0.3, 0.5)]), rtol=1e-6)
    assert w[1] > w[0] and expected[0] > expected[1]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_dtp_refuses_a_kpi_ema_outside_its_range(bad: float) -> None:
    with pytest.raises(ValueError, match=r"kpi_ema must be in \(0, 1\]"):
        balancing.create("dtp", ["a", "b"], kpi_ema=bad)


def _achievement(name: str, **hp: object) -> torch.Tensor:
    balancer = balancing.create(name, ["a", "b"], potentials=POTENTIALS, margin=0.0, **hp)
    # a overshoots its potential by 20 %, b sits exactly on it.
    balancer.update_kpis({"a": 0.96, "b": 0.5})
    return balancer.achievement_weights()


@pytest.mark.parametrize("name", ["amtl", "amtl_sum", "pcgrad_amtl", "cagrad_amtl"])
def test_amtl_clamps_an_overshoot_by_default_and_rebounds_as_the_seed_on_request(
    name: str,
) -> None:
    assert balancing.defaults(name)["overshoot"] == "clamp"
    clamped = _achievement(name)
    assert torch.allclose(clamped, torch.full((2,), 0.5, dtype=torch.float64))
    rebound = _achievement(name, overshoot="rebound")
    # The seed squares the negative base 1 − 0.96/0.8 = −0.2: a gains weight again.
    expected = torch.softmax(torch.tensor([0.04, 0.0], dtype=torch.float64), 0)
    assert torch.allclose(rebound, expected)
    assert rebound[0] > rebound[1]


def test_amtl_refuses_an_unknown_overshoot() -> None:
    with pytest.raises(ValueError, match=r"overshoot must be one of \('clamp', 'rebound'\)"):
        balancing.create("amtl", ["a", "b"], potentials=POTENTIALS, overshoot="square")


def test_db_mtl_beta_sigma_zero_is_libmtls_constant_momentum() -> None:
    assert balancing.defaults("db_mtl") == {"beta": 0.9, "beta_sigma": 0.5}
    losses = torch.ones(2)
    first = torch.tensor([[4.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # norms 2, 1
    second = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # norms 1, 1
    for sigma, decay in ((0.0, 0.9), (0.5, 0.9 / math.sqrt(2))):
        db = balancing.create("db_mtl", ["a", "b"], beta_sigma=sigma)
        db.weights(losses, first)
        w = db.weights(losses, second)
        # The EMAs start at 0 with momentum 0.9 at step 1, then `decay` at step 2.
        ema_a, ema_b = 1 + decay * (0.1 * 2 - 1), 1 + decay * (0.1 * 1 - 1)
        assert w.tolist() == pytest.approx([1.0, ema_a / ema_b], rel=1e-6)


def test_nash_mtl_clips_the_update_norm_only_when_asked() -> None:
    assert balancing.defaults("nash_mtl")["max_norm"] == 0.0
    J = torch.tensor([[3.0, 0.0, 1.0], [-1.0, 2.0, 0.0], [0.0, 1.0, 5.0]], dtype=torch.float64)
    G = J @ J.T
    free = balancing.create("nash_mtl", ["a", "b", "c"]).weights(torch.ones(3), G).double()
    # At the bargaining solution ‖Jᵀα‖² = Σ α(Gα) = T.
    assert float(free @ G @ free) == pytest.approx(3.0, rel=1e-5)
    clipped = balancing.create("nash_mtl", ["a", "b", "c"], max_norm=1.0)
    w = clipped.weights(torch.ones(3), G).double()
    assert float(w @ G @ w) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(w, free / math.sqrt(3), rtol=1e-5)
    loose = balancing.create("nash_mtl", ["a", "b", "c"], max_norm=10.0)
    assert torch.allclose(loose.weights(torch.ones(3), G).double(), free, rtol=1e-6)
    with pytest.raises(ValueError, match="max_norm must be >= 0"):
        balancing.create("nash_mtl", ["a", "b"], max_norm=-1.0)
