"""GradDrop, MoCo and ExcessMTL: the update direction each forms from the task Jacobian, the
weights it hands the heads, and the state it keeps between steps."""

from __future__ import annotations

import io
import math

import pytest
import torch

from models import balancing
from models.balancing._jacobian import graddrop_direction

TASKS = ("a", "b")
JACOBIAN_METHODS = ["excess_mtl", "graddrop", "moco"]


def _j(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _softmax(*logits: float) -> list[float]:
    exps = [math.exp(x) for x in logits]
    return [e / sum(exps) for e in exps]


def test_the_three_read_the_jacobian() -> None:
    listed = [m for m in balancing.list_methods() if balancing.describe(m).gradients == "jacobian"]
    assert listed == JACOBIAN_METHODS
    assert all(balancing.reads(m) == "losses, Jacobian" for m in listed)
    assert [m for m in listed if balancing.params_only(m)] == ["excess_mtl", "moco"]
    assert balancing.defaults("graddrop") == {"leak": 0.0}
    assert balancing.defaults("excess_mtl") == {"robust_step_size": 0.01}
    assert balancing.defaults("moco") == {
        "beta": 0.5,
        "beta_sigma": 0.5,
        "gamma": 0.1,
        "gamma_sigma": 0.5,
        "rho": 0.0,
    }


def test_a_method_of_losses_or_gramian_has_no_direction() -> None:
    with pytest.raises(NotImplementedError, match="MGDA"):
        balancing.create("mgda", TASKS).direction(torch.ones(2), torch.ones(2, 3))


# GradDrop


def test_graddrop_with_full_leak_is_the_sum() -> None:
    J = _j([1.0, -2.0, 0.5], [-3.0, 1.0, 0.25])
    d = balancing.create("graddrop", TASKS, leak=1.0).direction(torch.ones(2), J)
    assert torch.equal(d, J.sum(0))


def test_graddrop_keeps_unanimous_signs_whatever_the_draw() -> None:
    # Purity 1, 0 and ½ (no gradient): keep the positives, the negatives, nothing.
    J = _j([1.0, -2.0, 0.0], [3.0, -1.0, 0.0])
    graddrop = balancing.create("graddrop", TASKS)
    for _ in range(5):
        assert graddrop.direction(torch.ones(2), J).tolist() == [4.0, -3.0, 0.0]
    assert graddrop.weigh(torch.ones(2), J @ J.T).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("leak", [0.0, 0.5])
def test_graddrop_follows_its_draw_on_a_mixed_coordinate(leak: float) -> None:
    # Each column is (3, −1): purity ½(1 + 2/4) = 0.75, so the positive entry survives
    # where the draw is below 0.75 and the negative one where it is above.
    J = _j([3.0] * 8, [-1.0] * 8)
    graddrop = balancing.create("graddrop", TASKS, leak=leak)
    graddrop.generator.manual_seed(3)
    uniform = torch.rand(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = [3.0 - leak if u < 0.75 else 3.0 * leak - 1.0 for u in uniform.tolist()]
    assert {3.0 - leak, 3.0 * leak - 1.0} == set(expected)  # both branches are exercised
    assert graddrop.direction(torch.ones(2), J).tolist() == expected


def test_graddrop_keeps_each_sign_as_often_as_its_purity() -> None:
    J = _j([3.0] * 20_000, [-1.0] * 20_000)
    d = balancing.create("graddrop", TASKS).direction(torch.ones(2), J)
    # E[d] = 0.75·3 + 0.25·(−1) = 2; the mean of 20 000 draws has σ ≈ 0.012.
    assert float(d.mean()) == pytest.approx(2.0, abs=0.06)


def test_graddrop_purity_is_scale_free() -> None:
    J = _j([3.0, 0.0], [-1.0, 0.0])
    uniform = torch.tensor([0.7, 0.5], dtype=torch.float64)
    tiny = graddrop_direction(1e-12 * J, uniform, 0.0)
    assert torch.allclose(tiny, 1e-12 * graddrop_direction(J, uniform, 0.0), rtol=0, atol=0)


def test_graddrop_replays_from_its_seed_in_the_jacobians_dtype() -> None:
    J = torch.randn(2, 50, generator=torch.Generator().manual_seed(0))
    first, second = balancing.create("graddrop", TASKS), balancing.create("graddrop", TASKS)
    d = first.direction(torch.ones(2), J)
    assert d.dtype == torch.float32 and torch.equal(d, second.direction(torch.ones(2), J))


# MoCo


def test_moco_first_two_steps_by_hand() -> None:
    moco = balancing.create("moco", TASKS)
    # Step 1: each gradient scaled to its loss over its norm: (0.6, 0.8) and (0, 2).
    d = moco.direction(torch.tensor([1.0, 2.0]), _j([3.0, 4.0], [0.0, 2.0]))
    y = [[0.5 * 0.6, 0.5 * 0.8], [0.0, 0.5 * 2.0]]  # y = 0 − β(0 − g), β = 0.5/1^0.5
    yy = [[0.25, 0.4], [0.4, 1.0]]
    lam = _softmax(0.5 - 0.1 * (yy[0][0] + yy[0][1]) / 2, 0.5 - 0.1 * (yy[1][0] + yy[1][1]) / 2)
    expected = [lam[0] * y[0][k] + lam[1] * y[1][k] for k in range(2)]
    assert d.tolist() == pytest.approx(expected, rel=1e-6)
    assert moco.weigh(torch.ones(2), torch.eye(2)).tolist() == pytest.approx(lam, rel=1e-6)

    # Step 2: unit gradients of loss 1, β = 0.5/√2, γ = 0.1/√2.
    d = moco.direction(torch.tensor([1.0, 1.0]), _j([0.0, 1.0], [1.0, 0.0]))
    beta, gamma = 0.5 / math.sqrt(2), 0.1 / math.sqrt(2)
    g = [[0.0, 1.0], [1.0, 0.0]]
    y = [[y[t][k] - beta * (y[t][k] - g[t][k]) for k in range(2)] for t in range(2)]
    yy = [[sum(y[s][k] * y[t][k] for k in range(2)) for t in range(2)] for s in range(2)]
    lam = _softmax(*(lam[s] - gamma * (yy[s][0] * lam[0] + yy[s][1] * lam[1]) for s in range(2)))
    expected = [lam[0] * y[0][k] + lam[1] * y[1][k] for k in range(2)]
    assert d.tolist() == pytest.approx(expected, rel=1e-6)
    assert moco.weigh(torch.ones(2), torch.eye(2)).tolist() == pytest.approx(lam, rel=1e-6)


def test_moco_rho_pulls_the_weights_together() -> None:
    J = _j([10.0, 0.0], [0.0, 1.0])
    losses = torch.tensor([5.0, 1.0])
    plain, ridged = balancing.create("moco", TASKS), balancing.create("moco", TASKS, rho=50.0)
    for _ in range(3):
        plain.direction(losses, J)
        ridged.direction(losses, J)
    spread = [float(m.weights(losses).max() - m.weights(losses).min()) for m in (plain, ridged)]
    assert spread[1] < spread[0]


# ExcessMTL


def test_excess_mtl_weights_after_two_steps_by_hand() -> None:
    excess = balancing.create("excess_mtl", TASKS, robust_step_size=0.5)
    # Step 1 fixes each task's reference risk, Σ g² / √(Σ g²): 1 and 2; the weights stay 1.
    d = excess.direction(torch.ones(2), _j([1.0, 0.0], [0.0, 2.0]))
    assert d.tolist() == pytest.approx([1.0, 2.0], rel=1e-6)
    assert excess.weigh(torch.ones(2), torch.eye(2)).tolist() == [1.0, 1.0]
    # Step 2: sums (5, 5); risks 4/√5 and 1/√5, relative 4/√5 and 1/(2√5).
    d = excess.direction(torch.ones(2), _j([2.0, 0.0], [0.0, 1.0]))
    raw = [math.exp(0.5 * 4 / math.sqrt(5)), math.exp(0.5 / (2 * math.sqrt(5)))]
    w = [2 * r / sum(raw) for r in raw]  # LibMTL's update, renormalised to sum T
    assert excess.weigh(torch.ones(2), torch.eye(2)).tolist() == pytest.approx(w, rel=1e-6)
    assert d.tolist() == pytest.approx([2 * w[0], w[1]], rel=1e-6)


def test_excess_mtl_takes_a_silent_tasks_reference_when_it_first_speaks() -> None:
    excess = balancing.create("excess_mtl", TASKS, robust_step_size=0.5)
    excess.direction(torch.ones(2), _j([1.0, 0.0], [0.0, 0.0]))
    excess.direction(torch.ones(2), _j([1.0, 0.0], [0.0, 1.0]))
    # a: risk 1/√2 over its reference 1; b: its first positive risk is its reference.
    w = [2 * p for p in _softmax(0.5 / math.sqrt(2), 0.0)]
    assert excess.weights(torch.ones(2)).tolist() == pytest.approx(w, rel=1e-6)


# All three


@pytest.mark.parametrize("method", JACOBIAN_METHODS)
@pytest.mark.parametrize(
    "case", ["parallel", "opposite", "zero_row", "rank_deficient", "all_zero", "tiny"]
)
def test_degenerate_jacobians_give_finite_directions(method: str, case: str) -> None:
    g = torch.tensor([1.0, 2.0, -0.5, 0.0], dtype=torch.float64)
    h = torch.tensor([0.3, -1.0, 1.0, 2.0], dtype=torch.float64)
    J = {
        "parallel": torch.stack([g, 2 * g, 0.5 * g]),
        "opposite": torch.stack([g, -g, h]),
        "zero_row": torch.stack([g, h, torch.zeros(4, dtype=torch.float64)]),
        "rank_deficient": torch.stack([g, h, g - 2 * h]),
        "all_zero": torch.zeros(3, 4, dtype=torch.float64),
        "tiny": 1e-30 * torch.stack([g, h, g + h]),
    }[case]
    balancer = balancing.create(method, ("a", "b", "c"))
    losses = torch.tensor([0.5, 1.0, 0.0])
    for _ in range(3):
        d = balancer.direction(losses, J)
        total = balancer.combine(losses, J @ J.T)
        assert torch.isfinite(d).all() and torch.isfinite(total), (d, total)
        assert torch.isfinite(balancer.last_weights).all()


@pytest.mark.parametrize("method", JACOBIAN_METHODS)
def test_bad_input_is_refused_naming_the_task_or_shape(method: str) -> None:
    balancer = balancing.create(method, TASKS)
    bad = _j([1.0, 2.0], [math.nan, 0.0])
    with pytest.raises(FloatingPointError, match=r"gradient for task\(s\) \['b'\]"):
        balancer.direction(torch.ones(2), bad)
    with pytest.raises(FloatingPointError, match=r"loss for task\(s\) \['a'\]"):
        balancer.direction(torch.tensor([math.inf, 1.0]), _j([1.0], [2.0]))
    with pytest.raises(ValueError, match=r"\(2, N\) Jacobian, got shape \(3, 2\)"):
        balancer.direction(torch.ones(2), torch.ones(3, 2))


@pytest.mark.parametrize("method", ["moco", "excess_mtl"])
def test_a_changed_shared_space_is_refused(method: str) -> None:
    balancer = balancing.create(method, TASKS)
    balancer.direction(torch.ones(2), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(2, 3\) state, but the Jacobian is \(2, 4\)"):
        balancer.direction(torch.ones(2), torch.ones(2, 4))


@pytest.mark.parametrize(
    ("method", "hp", "message"),
    [
        ("graddrop", {"leak": 1.5}, "leak must be in"),
        ("moco", {"beta": 0.0}, "beta must be in"),
        ("moco", {"gamma": -1.0}, "gamma must be > 0"),
        ("moco", {"rho": math.nan}, "rho must be >= 0"),
        ("excess_mtl", {"robust_step_size": 0.0}, "robust_step_size must be > 0"),
    ],
)
def test_bad_hyperparameters_are_refused(method: str, hp: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        balancing.create(method, TASKS, **hp)


def _steps(balancer: balancing.Balancer, seeds: range) -> torch.Tensor:
    d = torch.empty(0)
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        J = torch.randn(2, 64, generator=gen)
        losses = torch.rand(2, generator=gen) + 0.1
        d = balancer.direction(losses, J)
        balancer.combine(losses, (J @ J.T).double())
    return d


@pytest.mark.parametrize("method", JACOBIAN_METHODS)
def test_state_round_trip_through_a_checkpoint(method: str) -> None:
    first = balancing.create(method, TASKS)
    _steps(first, range(3))
    buffer = io.BytesIO()  # through bytes, as a checkpoint is
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = balancing.create(method, TASKS)
    second.load_state_dict(torch.load(buffer, weights_only=False))
    assert torch.equal(second.last_weights, first.last_weights)
    resumed = _steps(second, range(3, 5))
    assert torch.equal(_steps(first, range(3, 5)), resumed)
    assert torch.equal(first.weights(torch.ones(2)), second.weights(torch.ones(2)))
    # A fresh method goes on otherwise: the state (or GradDrop's generator) carried over.
    assert not torch.equal(_steps(balancing.create(method, TASKS), range(3, 5)), resumed)


@pytest.mark.parametrize("method", JACOBIAN_METHODS)
def test_to_moves_every_state_tensor(method: str) -> None:
    balancer = balancing.create(method, TASKS)
    _steps(balancer, range(2))
    balancer.to("meta")
    state = {k: v for k, v in vars(balancer).items() if isinstance(v, torch.Tensor)}
    assert {k for k, v in state.items() if v.device.type != "meta"} == {"last_weights"}
    assert balancer.device == torch.device("meta")
