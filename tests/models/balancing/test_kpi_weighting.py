import io
import math

import pytest
import torch

import models.balancing._kpi_weighting  # noqa: F401  (registers dtp, amtl, amtl_sum)
from models import balancing
from models.balancing._kpi_weighting import AchievementSumWeighting, AchievementWeighting

POTENTIALS = {"a": 0.8, "b": 0.5, "c": 0.6}


def _saved(balancer: balancing.Balancer) -> dict:
    """The balancer's state through torch.save / torch.load, as a checkpoint carries it."""
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _combined_grad(balancer: balancing.Balancer, losses: torch.Tensor) -> torch.Tensor:
    x = losses.detach().clone().requires_grad_(True)
    balancer.combine(x).backward()
    return x.grad


def _dtp(kappa: float, gamma: float) -> float:
    return -((1 - kappa) ** gamma) * math.log(kappa)


def _amtl(**hp: float) -> AchievementWeighting:
    balancer = balancing.create("amtl", ["a", "b", "c"], potentials=POTENTIALS, **hp)
    assert isinstance(balancer, AchievementWeighting)
    return balancer


def _softmax(values: list[float]) -> torch.Tensor:
    exp = [math.exp(v) for v in values]
    return torch.tensor([e / sum(exp) for e in exp], dtype=torch.float64)


# --- dtp ------------------------------------------------------------------------------------


def test_dtp_follows_its_formula_on_the_latest_kpi() -> None:
    dtp = balancing.create("dtp", ["a", "b"], kpi_ema=1.0)
    losses = torch.tensor([1.0, 2.0])
    assert torch.equal(dtp.weights(losses), torch.ones(2))  # no KPI yet
    dtp.update_kpis({"a": 0.1, "b": 0.2})
    dtp.update_kpis({"b": 0.9, "a": 0.5})  # the latest counts, not an average
    expected = torch.tensor([_dtp(0.5, 0.5), _dtp(0.9, 0.5)])
    assert torch.allclose(expected, torch.tensor([0.490129, 0.033318]), atol=1e-6)  # by hand
    assert torch.allclose(_combined_grad(dtp, losses), expected)
    assert dtp.weights(losses)[0] > dtp.weights(losses)[1]  # the weaker task weighs more
    dtp = balancing.create("dtp", ["a", "b"], gamma=2.0, kpi_ema=1.0)
    dtp.update_kpis({"a": 0.5, "b": 0.9})
    assert torch.allclose(dtp.weights(losses), torch.tensor([_dtp(0.5, 2.0), _dtp(0.9, 2.0)]))


def test_dtp_clamps_the_kpi_and_falls_back_to_equal_weights() -> None:
    dtp = balancing.create("dtp", ["a", "b"], kpi_ema=1.0)
    dtp.update_kpis({"a": 1.0, "b": 1e-9})
    w = dtp.weights(torch.ones(2, dtype=torch.float64))
    assert w[0] == 0  # a solved task weighs 0, as the formula says
    assert w[1].item() == pytest.approx(_dtp(1e-6, 0.5))  # clamped to 1e-6
    dtp.update_kpis({"a": 1.0, "b": 1.0})
    assert torch.equal(dtp.weights(torch.ones(2)), torch.ones(2))  # all 0: equal weights


def test_dtp_state_round_trip() -> None:
    dtp = balancing.create("dtp", ["a", "b"], gamma=1.0)
    dtp.update_kpis({"a": 0.3, "b": 0.7})
    restored = balancing.create("dtp", ["a", "b"], gamma=1.0)
    restored.load_state_dict(_saved(dtp))
    assert torch.equal(restored.weights(torch.ones(2)), dtp.weights(torch.ones(2)))
    assert not torch.equal(restored.weights(torch.ones(2)), torch.ones(2))


def test_dtp_refuses_bad_kpis_and_gamma() -> None:
    dtp = balancing.create("dtp", ["a", "b"])
    with pytest.raises(ValueError, match=r"dtp needs a validation KPI.*\['b'\]"):
        dtp.update_kpis({"a": 0.5})
    with pytest.raises(FloatingPointError, match="b"):
        dtp.update_kpis({"a": 0.5, "b": math.nan})
    with pytest.raises(ValueError, match="dtp gamma must be >= 0"):
        balancing.create("dtp", ["a", "b"], gamma=-0.5)


# --- amtl -----------------------------------------------------------------------------------


def test_amtl_weights_by_hand_with_ema_and_margin() -> None:
    amtl = _amtl()
    assert torch.allclose(amtl.achievement_weights(), torch.full((3,), 1 / 3).double())
    amtl.update_kpis({"a": 0.4, "b": 0.5, "c": 0.7})
    amtl.update_kpis({"a": 0.6, "b": 0.3, "c": 0.7})
    # κ = 0.1·new + 0.9·old = (0.42, 0.48, 0.70); p(1+m) = (0.84, 0.525, 0.63).
    assert torch.allclose(amtl.kpis, torch.tensor([0.42, 0.48, 0.70]).double())
    # c is past its potential plus margin: max(0, ·) makes its term 0.
    terms = [(1 - 0.42 / 0.84) ** 2, (1 - 0.48 / 0.525) ** 2, 0.0]
    assert terms[0] == pytest.approx(0.25)
    assert torch.allclose(amtl.achievement_weights(), _softmax(terms))
    # Without the margin b's term uses p = 0.5 itself.
    plain = _amtl(margin=0.0, gamma=1.0, ema=1.0)
    plain.update_kpis({"a": 0.4, "b": 0.5, "c": 0.7})
    plain.update_kpis({"a": 0.6, "b": 0.3, "c": 0.7})  # ema 1: the latest value
    expected = _softmax([1 - 0.6 / 0.8, 1 - 0.3 / 0.5, 0.0])
    assert torch.allclose(plain.achievement_weights(), expected)


def test_amtl_loss_is_the_weighted_geometric_mean() -> None:
    amtl = _amtl()
    amtl.update_kpis({"a": 0.3, "b": 0.45, "c": 0.2})
    a = amtl.achievement_weights()
    losses = torch.tensor([0.4, 1.7, 0.9], dtype=torch.float64)
    x = losses.clone().requires_grad_(True)
    product = (x**a).prod()
    (expected,) = torch.autograd.grad(product, x)
    assert torch.allclose(_combined_grad(amtl, losses), expected)
    assert amtl.combine(losses).item() == pytest.approx(product.item())  # Σ w L = G
    # Before any KPI: the plain geometric mean, which is GLS.
    fresh = _amtl()
    gls = balancing.create("gls", ["a", "b", "c"])
    assert torch.allclose(fresh.weights(losses), gls.weights(losses))


def test_amtl_leaves_an_unlabelled_task_out() -> None:
    amtl = _amtl()
    amtl.update_kpis({"a": 0.3, "b": 0.45, "c": 0.2})
    a = amtl.achievement_weights()
    losses = torch.tensor([0.4, 0.0, 0.9], dtype=torch.float64)
    w = amtl.weights(losses)
    assert torch.isfinite(w).all() and w[1] == 0
    x = losses.clone().requires_grad_(True)
    kept = torch.tensor([a[0], a[2]]) / (a[0] + a[2])
    (expected,) = torch.autograd.grad(x[0] ** kept[0] * x[2] ** kept[1], x)
    assert torch.allclose(w, expected)
    assert torch.equal(amtl.weights(torch.zeros(3)), torch.zeros(3))


def test_amtl_needs_the_potentials_of_every_task() -> None:
    with pytest.raises(ValueError, match=r"amtl needs each task's potential.*\['a', 'b'\]"):
        balancing.create("amtl", ["a", "b"])
    with pytest.raises(ValueError, match=r"\['b'\].*spec's `potentials`.*single-task trials"):
        balancing.create("amtl", ["a", "b"], potentials={"a": 0.5, "z": 0.3})
    with pytest.raises(ValueError, match=r"amtl_sum needs each task's potential.*\['c'\]"):
        balancing.create("amtl_sum", ["a", "c"], potentials={"a": 0.5})
    # Potentials of tasks outside the trial are ignored.
    amtl = balancing.create("amtl", ["a"], potentials={"a": 0.5, "z": 0.3})
    assert torch.allclose(amtl.potentials, torch.tensor([0.5]).double())


@pytest.mark.parametrize(
    ("hp", "message"),
    [
        ({"potentials": {"a": 0.0, "b": 0.5}}, r"potentials must be in \(0, 1\]"),
        ({"potentials": {"a": 1.5, "b": 0.5}}, r"potentials must be in \(0, 1\]"),
        ({"margin": -0.01}, "margin must be >= 0"),
        ({"gamma": -1.0}, "gamma must be >= 0"),
        ({"ema": 0.0}, r"ema must be in \(0, 1\]"),
        ({"ema": 1.5}, r"ema must be in \(0, 1\]"),
    ],
)
def test_amtl_refuses_bad_hyperparameters(hp: dict, message: str) -> None:
    hp = {"potentials": {"a": 0.5, "b": 0.5}, **hp}
    with pytest.raises(ValueError, match=f"amtl {message}"):
        balancing.create("amtl", ["a", "b"], **hp)


def test_amtl_sum_uses_the_weights_on_the_arithmetic_sum() -> None:
    amtl_sum = balancing.create("amtl_sum", ["a", "b", "c"], potentials=POTENTIALS)
    assert isinstance(amtl_sum, AchievementSumWeighting)
    amtl = _amtl()
    for kpis in ({"a": 0.4, "b": 0.5, "c": 0.7}, {"a": 0.6, "b": 0.3, "c": 0.7}):
        amtl.update_kpis(kpis)
        amtl_sum.update_kpis(kpis)
    w = amtl.achievement_weights()
    assert torch.equal(amtl_sum.achievement_weights(), w)
    losses = torch.tensor([0.4, 1.7, 0.9])
    assert torch.allclose(_combined_grad(amtl_sum, losses), w.float())
    assert amtl_sum.combine(losses).item() == pytest.approx((w.float() * losses).sum().item())
    assert torch.allclose(amtl_sum.weights(torch.tensor([0.4, 0.0, 0.9])), w.float())


@pytest.mark.parametrize("method", ["amtl", "amtl_sum"])
def test_amtl_state_round_trip(method: str) -> None:
    amtl = balancing.create(method, ["a", "b", "c"], potentials=POTENTIALS)
    amtl.update_kpis({"a": 0.4, "b": 0.5, "c": 0.7})
    amtl.update_kpis({"a": 0.6, "b": 0.3, "c": 0.5})
    restored = balancing.create(method, ["a", "b", "c"], potentials=POTENTIALS)
    restored.load_state_dict(_saved(amtl))
    losses = torch.tensor([0.4, 1.7, 0.9])
    assert torch.equal(restored.weights(losses), amtl.weights(losses))
    for model in (amtl, restored):  # the EMA goes on from the restored κ
        model.update_kpis({"a": 0.7, "b": 0.35, "c": 0.5})
    assert torch.equal(restored.kpis, amtl.kpis)
    assert torch.equal(restored.weights(losses), amtl.weights(losses))


# --- all three ------------------------------------------------------------------------------


def _create(method: str, tasks: list[str]) -> balancing.Balancer:
    hp = {"potentials": {t: 0.9 for t in tasks}} if method.startswith("amtl") else {}
    return balancing.create(method, tasks, **hp)


@pytest.mark.parametrize("method", ["dtp", "amtl", "amtl_sum"])
def test_kpi_methods_refuse_a_nan_loss_naming_the_task(method: str) -> None:
    balancer = _create(method, ["semseg", "depth"])
    balancer.update_kpis({"semseg": 0.4, "depth": 0.6})
    with pytest.raises(FloatingPointError, match="semseg"):
        balancer.combine(torch.tensor([math.nan, 1.0]))


@pytest.mark.parametrize("method", ["dtp", "amtl", "amtl_sum"])
def test_kpi_methods_finite_with_an_unlabelled_task(method: str) -> None:
    balancer = _create(method, ["a", "b"])
    balancer.update_kpis({"a": 0.4, "b": 0.6})
    x = torch.tensor([0.0, 1.3], requires_grad=True)
    balancer.combine(x).backward()
    assert torch.isfinite(x.grad).all()


def test_kpi_methods_defaults_and_flags() -> None:
    assert balancing.defaults("dtp") == {"gamma": 0.5, "kpi_ema": 0.1}
    amtl = {"potentials": None, "margin": 0.05, "gamma": 2.0, "ema": 0.1, "overshoot": "clamp"}
    assert balancing.defaults("amtl") == amtl
    assert balancing.defaults("amtl_sum") == amtl
    for method in ("dtp", "amtl", "amtl_sum"):
        assert _create(method, ["a"]).uses_kpis
        assert "Yun" in balancing.paper(method) or "Guo" in balancing.paper(method)
