"""A trial's step under ZeRO and the GPU switches, on the real DeepSpeed engine (CPU, gloo):
DeepSpeed clips SGD's gradients at ZeRO stage 2, and channels-last reaches the weights
and the inputs."""

from __future__ import annotations

import pytest
import torch

from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(**fields: object) -> TrialSetup:
    spec = StudySpec(
        name="t",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=16, val_samples=8),
        model={"backbone": "regnetx_002", "head_channels": 8},
        batch_size=8,
        epochs=2,
        baselines="none",
        **fields,
    )
    return TrialSetup(spec=spec, tasks=tuple(spec.tasks))


def _config(lr: float) -> dict:
    return {"optim": {"lr": lr, "weight_decay": 0.0}, "model": {}, "method": "ew", "ew": {}}


def _update_norm(runner: TrialRunner) -> float:
    """How far one training step moves the weights."""
    params = list(runner.engine.module.parameters())
    before = [p.detach().float().clone() for p in params]
    images, targets, _ = next(iter(runner.train.batches(8, 0)))
    runner.train_step(images, targets)
    moved = [(p.detach().float() - b).flatten() for p, b in zip(params, before, strict=True)]
    return float(torch.cat(moved).norm())


@pytest.mark.parametrize("zero_stage", [1, 2])
def test_deepspeed_clips_sgd_under_zero(zero_stage: int) -> None:
    lr, clip = 10.0, 1e-3
    sgd = {"name": "sgd", "momentum": 0.0}
    deepspeed = {"zero_stage": zero_stage}
    clipped = TrialRunner(
        _setup(optimizer=sgd, deepspeed=deepspeed, gradient_clip=clip), _config(lr)
    )
    assert type(clipped.schedule.optimizer) is torch.optim.SGD
    moved = _update_norm(clipped)
    # Plain SGD moves the weights by lr × the gradient, whose norm is clipped to `clip`.
    assert float(clipped.engine.get_global_grad_norm()) > 100 * clip
    assert 0 < moved <= lr * clip * 1.001

    free = TrialRunner(_setup(optimizer=sgd, deepspeed=deepspeed), _config(lr))
    assert _update_norm(free) > 100 * lr * clip


def _channels_last(t: torch.Tensor) -> bool:
    """Channels-last, and not merely because its shape makes both layouts one."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def test_channels_last_reaches_weights_and_inputs_and_the_trial_trains() -> None:
    runner = TrialRunner(_setup(channels_last=True), _config(3e-3))
    convs = [p for p in runner.engine.module.parameters() if p.dim() == 4]
    either = [p for p in convs if not p.is_contiguous() or _channels_last(p)]
    assert either and all(_channels_last(p) for p in either)
    images, _, _ = next(iter(runner.train.batches(8, 0)))
    assert _channels_last(runner._inputs(images))

    first, second = runner.run_epoch(), runner.run_epoch()
    assert torch.isfinite(torch.tensor([first["val_loss"], second["val_loss"]])).all()
    assert second["train_loss/semseg"] < first["train_loss/semseg"]
    assert all(_channels_last(p) for p in either)  # the optimiser's steps kept them so

    # By default, on the CPU: the layout the model was built in.
    default = TrialRunner(_setup(), _config(3e-3))
    assert not any(_channels_last(p) for p in default.engine.module.parameters())
    assert runner._inputs(images).shape == default._inputs(images).shape
    assert not _channels_last(default._inputs(images))
