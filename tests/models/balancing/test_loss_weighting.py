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
