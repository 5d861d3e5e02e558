import io
import math

import pytest
import torch

from models import balancing


def test_ew_sums_the_losses() -> None:
    ew = balancing.create("ew", ["a", "b", "c"])
    losses = torch.tensor([1.0, 2.0, 3.5], requires_grad=True)
    total = ew.combine(losses)
    assert total.item() == pytest.approx(6.5)
    total.backward()
    assert torch.equal(losses.grad, torch.ones(3))


def test_dwa_follows_its_formula() -> None:
    dwa = balancing.create("dwa", ["a", "b"], temperature=2.0)
    losses = torch.tensor([1.0, 1.0])
    assert torch.equal(dwa.weights(losses), torch.ones(2))  # no history yet
    dwa.end_epoch(torch.tensor([2.0, 4.0]))
    assert torch.equal(dwa.weights(losses), torch.ones(2))  # one epoch is not a ratio
    dwa.end_epoch(torch.tensor([1.0, 4.0]))
    r = torch.tensor([0.5, 1.0])
    expected = 2 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    assert torch.allclose(dwa.weights(losses), expected)
    assert dwa.weights(losses).sum().item() == pytest.approx(2.0)
    assert dwa.weights(losses)[1] > dwa.weights(losses)[0]  # the slower task weighs more


def test_dwa_state_round_trip() -> None:
    dwa = balancing.create("dwa", ["a", "b"])
    for epoch_losses in ([3.0, 1.0], [1.0, 1.0], [0.5, 0.9]):
        dwa.end_epoch(torch.tensor(epoch_losses))
    restored = balancing.create("dwa", ["a", "b"])
    restored.load_state_dict(dwa.state_dict())
    restored.end_epoch(torch.tensor([0.4, 0.2]))
    dwa.end_epoch(torch.tensor([0.4, 0.2]))
    assert torch.equal(restored.weights(torch.ones(2)), dwa.weights(torch.ones(2)))


def test_non_finite_loss_is_refused_with_the_task_named() -> None:
    ew = balancing.create("ew", ["semseg", "depth"])
    with pytest.raises(FloatingPointError, match="depth"):
        ew.combine(torch.tensor([1.0, math.nan]))


def test_unknown_method_and_hyperparameter() -> None:
    with pytest.raises(KeyError, match="expected one of"):
        balancing.create("nope", ["a"])
    with pytest.raises(TypeError, match="temperature"):
        balancing.create("dwa", ["a"], temp=1.0)
    with pytest.raises(ValueError, match="> 0"):
        balancing.create("dwa", ["a"], temperature=0.0)
    assert balancing.defaults("dwa") == {"temperature": 2.0}


# --- fixed, rlw, gls, uw, famo ------------------------------------------------------------

NEW_METHODS = ["fixed", "rlw", "gls", "uw", "famo"]


def _saved(balancer: balancing.Balancer) -> dict:
    """The balancer's state through torch.save / torch.load, as a checkpoint carries it.

    (Adam's ``state_dict`` holds its live moment tensors; reloading it in the same process
    without a copy would make two optimisers share them.)
    """
    buffer = io.BytesIO()
    torch.save(balancer.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def _grad_of(fn, losses: torch.Tensor) -> torch.Tensor:
    """d fn(L) / dL at ``losses``, by autograd."""
    x = losses.detach().clone().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(x), x)
    return grad


def _combined_grad(balancer: balancing.Balancer, losses: torch.Tensor) -> torch.Tensor:
    """d combine(L) / dL: the effective weights the network's update sees."""
    x = losses.detach().clone().requires_grad_(True)
    balancer.combine(x).backward()
    return x.grad


def test_fixed_weights_are_parsed_in_task_order() -> None:
    fixed = balancing.create("fixed", ["a", "b", "c"], weights=" 1.0, 0.5,2 ")
    losses = torch.tensor([3.0, 2.0, 1.0])
    assert torch.equal(_combined_grad(fixed, losses), torch.tensor([1.0, 0.5, 2.0]))
    assert fixed.combine(losses).item() == pytest.approx(3.0 + 1.0 + 2.0)
    assert torch.equal(balancing.create("fixed", ["a", "b"]).weights(losses[:2]), torch.ones(2))
    listed = balancing.create("fixed", ["a", "b"], weights=[0.0, 3.0])
    assert torch.equal(listed.weights(losses[:2]), torch.tensor([0.0, 3.0]))


@pytest.mark.parametrize("bad", ["1,2", "1,2,3,4", "1,-1,2", "0,0,0", "1,x,2", "1,nan,2"])
def test_fixed_refuses_bad_weights(bad: str) -> None:
    with pytest.raises(ValueError, match="fixed weights must be 3 numbers"):
        balancing.create("fixed", ["a", "b", "c"], weights=bad)


def test_rlw_draws_a_fresh_softmax_of_a_normal_each_step() -> None:
    rlw = balancing.create("rlw", ["a", "b", "c"])
    losses = torch.ones(3)
    draws = [rlw.weights(losses) for _ in range(5)]
    for w in draws:
        assert w.sum().item() == pytest.approx(1.0)
        assert (w > 0).all()
    assert all(not torch.allclose(draws[0], w) for w in draws[1:])
    # Same generator seed, same sequence: it is softmax(randn) from the generator.
    generator = torch.Generator().manual_seed(0)
    for w in draws:
        expected = torch.softmax(torch.randn(3, generator=generator, dtype=torch.float64), 0)
        assert torch.allclose(w, expected.float())
    other = balancing.create("rlw", ["a", "b", "c"])
    other.generator.manual_seed(1)
    assert not torch.allclose(other.weights(losses), draws[0])


def test_rlw_state_round_trip() -> None:
    rlw = balancing.create("rlw", ["a", "b"])
    for _ in range(3):
        rlw.combine(torch.tensor([1.0, 2.0]))
    restored = balancing.create("rlw", ["a", "b"])
    restored.load_state_dict(_saved(rlw))
    assert torch.equal(restored.last_weights, rlw.last_weights)
    for _ in range(2):
        assert torch.equal(restored.weights(torch.ones(2)), rlw.weights(torch.ones(2)))


def test_gls_gradient_is_that_of_the_geometric_mean() -> None:
    gls = balancing.create("gls", ["a", "b", "c"])
    losses = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)
    expected = _grad_of(lambda x: x.prod() ** (1 / 3), losses)
    assert torch.allclose(_combined_grad(gls, losses), expected)
    # By hand: G = 2, w_t = G / (3 L_t).
    assert torch.allclose(gls.weights(losses), torch.tensor([4 / 3, 1 / 3, 1 / 12]).double())
    assert gls.combine(losses).item() == pytest.approx(2.0)  # Σ_t w_t L_t = G itself


def test_gls_leaves_an_unlabelled_task_out() -> None:
    gls = balancing.create("gls", ["a", "b", "c"])
    losses = torch.tensor([0.5, 0.0, 8.0], dtype=torch.float64)
    w = gls.weights(losses)
    assert torch.isfinite(w).all() and w[1] == 0
    expected = _grad_of(lambda x: (x[0] * x[2]) ** 0.5, losses)
    assert torch.allclose(w, expected)
    assert torch.equal(gls.weights(torch.zeros(3)), torch.zeros(3))
    with pytest.raises(ValueError, match=r"gls needs losses >= 0.*\['c'\]"):
        gls.weights(torch.tensor([1.0, 1.0, -0.1]))


def test_uw_gradient_and_steps_towards_log_loss() -> None:
    uw = balancing.create("uw", ["a", "b"], lr=0.05)
    (s,) = uw.parameters()
    with torch.no_grad():
        s.copy_(torch.tensor([0.3, -0.2]))
    losses = torch.tensor([4.0, 0.25])
    x = losses.clone().requires_grad_(True)
    total = uw.combine(x)
    expected_total = (0.5 * torch.exp(-s) * losses + 0.5 * s).sum()
    assert total.item() == pytest.approx(expected_total.item())
    total.backward()
    assert torch.allclose(s.grad, -0.5 * torch.exp(-s.detach()) * losses + 0.5)
    assert torch.allclose(x.grad, 0.5 * torch.exp(-s.detach()))
    target = losses.log()
    gap = (s.detach() - target).abs()
    for _ in range(20):
        uw.step()
        uw.combine(losses).backward()
    assert ((s.detach() - target).abs() < gap).all()
    assert s.grad is not None  # the last combine's gradient, not yet stepped
    for _ in range(600):
        uw.step()
        uw.combine(losses).backward()
    assert torch.allclose(s.detach(), target, atol=0.05)


def test_uw_unlabelled_task_is_out_of_the_penalty() -> None:
    uw = balancing.create("uw", ["a", "b"])
    uw.combine(torch.tensor([2.0, 0.0])).backward()
    (s,) = uw.parameters()
    assert torch.allclose(s.grad, torch.tensor([-0.5 * 2.0 + 0.5, 0.0]))


def test_uw_state_round_trip() -> None:
    uw = balancing.create("uw", ["a", "b"])
    for losses in ([3.0, 1.0], [2.0, 0.5], [1.5, 0.4]):
        uw.combine(torch.tensor(losses)).backward()
        uw.step()
    restored = balancing.create("uw", ["a", "b"])
    restored.load_state_dict(_saved(uw))
    for model in (uw, restored):
        model.combine(torch.tensor([1.0, 0.3])).backward()
        model.step()
    assert torch.equal(restored.parameters()[0], uw.parameters()[0])
    assert torch.equal(restored.weights(torch.ones(2)), uw.weights(torch.ones(2)))


def test_famo_weights_are_the_gradient_of_its_log_loss() -> None:
    famo = balancing.create("famo", ["a", "b", "c"])
    (xi,) = famo.parameters()
    with torch.no_grad():
        xi.copy_(torch.tensor([0.4, -0.1, 0.2]))
    losses = torch.tensor([0.3, 2.0, 1.1], dtype=torch.float64)
    z = torch.softmax(xi.detach(), 0)

    def famo_loss(x: torch.Tensor) -> torch.Tensor:
        d = x + 1e-8
        c = (z / d).sum().detach()
        return (z * d.log() / c).sum()

    w = famo.weights(losses)  # first call: no previous losses, ξ unchanged
    assert torch.allclose(w, _grad_of(famo_loss, losses))
    assert w.sum().item() == pytest.approx(1.0)
    assert not w.requires_grad


def test_famo_updates_its_logits_with_adam_on_the_softmax_jacobian() -> None:
    famo = balancing.create("famo", ["a", "b", "c"], lr=0.1, gamma=0.01)
    (xi,) = famo.parameters()
    reference = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    adam = torch.optim.Adam([reference], lr=0.1, weight_decay=0.01)
    steps = [[1.0, 2.0, 0.5], [0.8, 1.9, 0.5], [0.5, 1.8, 0.45], [0.45, 1.0, 0.44]]
    for previous, now in zip(steps, steps[1:], strict=False):
        delta = torch.tensor(previous).double().add(1e-8).log() - torch.tensor(now).add(1e-8).log()
        (grad,) = torch.autograd.grad(torch.softmax(reference, 0), reference, delta)
        reference.grad = grad
        adam.step()
    for losses in steps:
        famo.weights(torch.tensor(losses))
    assert torch.allclose(xi.detach(), reference.detach())
    # The task whose loss fell fastest (a) is weighed down relative to the others.
    z = torch.softmax(xi.detach(), 0)
    assert z[0] < 1 / 3 and z.argmin() == 0


def test_famo_unlabelled_task_gets_zero_weight_and_no_delta() -> None:
    famo = balancing.create("famo", ["a", "b", "c"])
    w = famo.weights(torch.tensor([1.0, 0.0, 2.0]))
    assert torch.isfinite(w).all() and w[1] == 0
    assert w.sum().item() == pytest.approx(1.0)
    assert torch.allclose(w, torch.tensor([2 / 3, 0.0, 1 / 3]), atol=1e-6)
    famo.weights(torch.tensor([1.0, 0.5, 1.0]))  # b unlabelled before: its δ is 0
    z = torch.softmax(famo.parameters()[0].detach(), 0)
    # Only c improved: c weighed down; a and b (δ = 0) move alike.
    assert z[2] < z[0] and z[0] == pytest.approx(z[1].item())


def test_famo_state_round_trip() -> None:
    famo = balancing.create("famo", ["a", "b"])
    for losses in ([3.0, 1.0], [2.0, 0.9], [1.5, 0.85]):
        famo.weights(torch.tensor(losses))
    restored = balancing.create("famo", ["a", "b"])
    restored.load_state_dict(_saved(famo))
    for losses in ([1.0, 0.8], [0.9, 0.5]):
        assert torch.equal(
            restored.weights(torch.tensor(losses)), famo.weights(torch.tensor(losses))
        )
    assert torch.equal(restored.parameters()[0], famo.parameters()[0])


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_methods_refuse_a_nan_loss_naming_the_task(method: str) -> None:
    balancer = balancing.create(method, ["semseg", "depth"])
    balancer.combine(torch.tensor([1.0, 2.0]))
    with pytest.raises(FloatingPointError, match="depth"):
        balancer.combine(torch.tensor([1.0, math.nan]))


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_methods_give_finite_weights_with_an_unlabelled_task(method: str) -> None:
    balancer = balancing.create(method, ["a", "b", "c"])
    for losses in ([1.0, 0.0, 2.0], [0.0, 0.5, 1.0], [0.7, 0.4, 0.0]):
        x = torch.tensor(losses, requires_grad=True)
        total = balancer.combine(x)
        total.backward()
        assert torch.isfinite(x.grad).all() and torch.isfinite(total)
        balancer.step()


@pytest.mark.parametrize(
    ("method", "hp", "message"),
    [
        ("uw", {"lr": 0.0}, "uw lr must be > 0"),
        ("uw", {"lr": -1.0}, "uw lr must be > 0"),
        ("famo", {"lr": 0.0}, "famo lr must be > 0"),
        ("famo", {"gamma": -0.1}, "famo gamma"),
        ("famo", {"gamma": math.nan}, "famo gamma"),
    ],
)
def test_bad_hyperparameters_are_refused(method: str, hp: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        balancing.create(method, ["a", "b"], **hp)


def test_new_methods_defaults_and_papers() -> None:
    assert balancing.defaults("fixed") == {"weights": ""}
    assert balancing.defaults("rlw") == {}
    assert balancing.defaults("gls") == {}
    assert balancing.defaults("uw") == {"lr": 1e-2}
    assert balancing.defaults("famo") == {"lr": 0.025, "gamma": 0.001}
    for method in NEW_METHODS:
        assert balancing.paper(method)
        assert not balancing.create(method, ["a", "b"]).uses_kpis
