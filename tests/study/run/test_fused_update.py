"""A gradient-level method's step takes the update from the task gradients themselves (no
second backward): the same step, through DeepSpeed, as backpropagating ``Σ w_t L_t``."""

from __future__ import annotations

import copy

import pytest
import torch

from models.balancing import TaskGramian
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, DeepSpeedSpec, OptimizerSpec, StudySpec

TASKS = ["semseg", "depth", "normals"]


def _runner(method: str, space: str, zero_stage: int) -> TrialRunner:
    spec = StudySpec(
        name="fused",
        tasks=TASKS,
        dataset=DatasetSpec(image_size=32, train_samples=8, val_samples=1),
        batch_size=8,
        gradient_space=space,
        deepspeed=DeepSpeedSpec(zero_stage=zero_stage),
        # Plain SGD: a step is linear in the gradient, so float noise stays noise (Adam's
        # normalisation would blow up the noise of a near-zero gradient).
        optimizer=OptimizerSpec(name="sgd", momentum=0.0),
    )
    setup = TrialSetup(spec=spec, tasks=tuple(TASKS), potentials={t: 0.8 for t in TASKS})
    return TrialRunner(setup, {"method": method, "optim": {"lr": 0.05, "weight_decay": 0.0}})


def _classic(runner: TrialRunner) -> TrialRunner:
    """The same trial stepping by ``engine.backward(Σ w_t L_t)``."""
    assert runner.task_jacobian is not None
    runner.task_jacobian.close()
    runner.task_jacobian = None
    runner.task_gramian = TaskGramian(
        runner.engine.module, "shared", runner.setup.spec.gradient_space
    )
    return runner


def _params(runner: TrialRunner) -> list[torch.Tensor]:
    return [p.detach().clone() for p in runner.engine.module.parameters()]


@pytest.mark.parametrize(
    ("method", "space", "zero_stage"),
    [
        ("mgda", "params", 0),
        ("imtl", "params", 0),  # its loss scales train on their own gradients
        ("upgrad", "representation", 0),
        ("mgda", "params", 2),
    ],
)
def test_a_fused_step_equals_the_weighted_backward(
    method: str, space: str, zero_stage: int
) -> None:
    fused = _runner(method, space, zero_stage)
    classic = _classic(_runner(method, space, zero_stage))
    before = _params(fused)
    for a, b in zip(before, _params(classic), strict=True):
        assert torch.equal(a, b)  # the same seeded initialisation
    batch = fused.train
    for _ in range(2):
        torch.manual_seed(3)
        fused.train_step(batch.images, batch.targets)
        torch.manual_seed(3)
        classic.train_step(batch.images, batch.targets)
    moved = 0.0
    for a, b, start in zip(_params(fused), _params(classic), before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        moved = max(moved, float((a - start).abs().max()))
    assert moved > 1e-4  # the steps did change the network
    torch.testing.assert_close(fused.balancer.last_weights, classic.balancer.last_weights)
    for a, b in zip(fused.balancer.parameters(), classic.balancer.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_a_jacobian_method_trains() -> None:
    runner = _runner("graddrop", "params", 0)
    before = copy.deepcopy(_params(runner))
    batch = runner.train
    losses = runner.train_step(batch.images, batch.targets)
    assert torch.isfinite(losses).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, _params(runner), strict=True))


@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_a_one_process_step_equals_plain_sgd(zero_stage: int) -> None:
    # One process skips DeepSpeed's all-reduce at ZeRO 0 (nothing to reduce); the step
    # must still be exactly torch's, at every stage.
    runner = _runner("ew", "params", zero_stage)
    plain = copy.deepcopy(runner.engine.module)
    batch = runner.train
    runner.train_step(batch.images, batch.targets)
    preds = plain(batch.images)
    losses = runner._task_losses(preds, batch.targets)
    total = sum(w * loss for w, loss in zip(runner.balancer.last_weights, losses, strict=True))
    total.backward()
    with torch.no_grad():
        for p in plain.parameters():
            if p.grad is not None:
                p -= 0.05 * p.grad
    for a, b in zip(runner.engine.module.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-4, atol=1e-6)
    assert not runner.engine.enable_backward_allreduce or zero_stage > 0


@pytest.mark.parametrize("factor", [1.0, 2.0])
def test_the_update_node_hands_each_parameter_its_scaled_update(factor: float) -> None:
    from study.run._precision import _GivenGradients

    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 2))]
    given = [torch.randn(3), torch.randn(2, 2)]
    out = _GivenGradients.apply(([g.clone() for g in given], 4.0), *params)
    # engine.backward multiplies the loss (fp16's scale); the node divides by its own.
    (out * (4.0 * factor)).backward()
    for param, grad in zip(params, given, strict=True):
        torch.testing.assert_close(param.grad, grad * factor)
