"""A trial's fp16 step on DeepSpeed's real fp16 optimiser and dynamic loss scaler.

DeepSpeed's CPU accelerator refuses fp16 where oneDNN has no fp16 kernels (most CPUs,
and why the spec asks for GPUs), yet torch computes fp16 on any CPU. Its capability flag
alone is overridden here, so that DeepSpeed's loss scaling and overflow skips run as they
would on a GPU; nothing else of DeepSpeed is replaced.
"""

from __future__ import annotations

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup, ensure_distributed
from study.spec import DatasetSpec, StudySpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fp16_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_distributed()
    from deepspeed.accelerator import get_accelerator

    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: True)


def _spec(**fields: object) -> StudySpec:
    defaults: dict[str, object] = {
        "gpus_per_worker": 1,  # fp16 asks for GPUs; outside Ray, without one, it is the CPU
        "deepspeed": {"precision": "fp16"},
    }
    return StudySpec(
        name="t",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=16, val_samples=8),
        model={"backbone": "regnetx_002", "head_channels": 8},
        batch_size=8,
        epochs=1,
        baselines="none",
        **(defaults | fields),
    )


def _runner(method: str) -> TrialRunner:
    spec = _spec()
    config = load_space("default").default_config(method)
    return TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config)


def test_a_task_gradient_overflow_skips_the_step_as_deepspeed_does(fp16_runs: None) -> None:
    runner = _runner("upgrad")
    engine = runner.engine
    assert {p.dtype for p in engine.module.parameters()} == {torch.float16}
    assert engine.optimizer.loss_scale == 2.0**16
    images, targets, _ = next(iter(runner.train.batches(8, 0)))
    params = list(engine.module.parameters())
    before = [p.detach().clone() for p in params]
    rate = runner.schedule.get_last_lr()

    engine.optimizer.loss_scale = 2.0**60  # every fp16 task gradient overflows
    losses = runner.train_step(images, targets)
    assert losses.isfinite().all()  # the forward's losses, reported as ever
    assert engine.skipped_steps == 1 and not engine.was_step_applied()
    assert engine.optimizer.loss_scale == 2.0**59  # DeepSpeed lowered it
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert torch.equal(runner.balancer.last_weights, torch.ones(2))  # never saw it
    assert runner.schedule.get_last_lr() == rate and runner.schedule.last_epoch == 0

    engine.optimizer.loss_scale = 2.0**16
    runner.train_step(images, targets)
    assert engine.skipped_steps == 1 and engine.was_step_applied()
    assert not all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert not torch.equal(runner.balancer.last_weights, torch.ones(2))
    assert runner.schedule.last_epoch == 1


@pytest.mark.parametrize("method", ["upgrad", "uw"])
def test_an_fp16_trial_trains(fp16_runs: None, method: str) -> None:
    runner = _runner(method)
    report = runner.run_epoch()
    assert runner.engine.skipped_steps == 0
    assert all(torch.isfinite(torch.tensor(report[f"train_loss/{t}"])) for t in runner.tasks)
    # UW's log-variances (their gradients unscaled: test_precision) stepped and stay finite.
    if method == "uw":
        (log_variances,) = runner.balancer.parameters()
        assert log_variances.isfinite().all() and log_variances.abs().max() > 0


def test_an_epochs_skipped_steps_and_loss_scale_are_reported_and_stored(
    fp16_runs: None,
) -> None:
    from study.run import history_rows

    runner = _runner("ew")
    runner.engine.optimizer.loss_scale = 2.0**60  # both steps of the epoch overflow
    report = runner.run_epoch()
    assert report["skipped_steps"] == 2 and runner.engine.skipped_steps == 2
    assert report["loss_scale"] == runner.engine.optimizer.loss_scale < 2.0**60
    rows = {
        (r["split"], r["task"], r["metric"]): r["value"] for r in history_rows(report, runner.tasks)
    }
    assert rows["train", "all", "skipped_steps"] == 2
    assert rows["train", "all", "loss_scale"] == report["loss_scale"]
    # The next epoch counts its own.
    runner.engine.optimizer.loss_scale = 2.0**8
    assert runner.run_epoch()["skipped_steps"] == 0


@pytest.mark.parametrize(("method", "zero_stage"), [("ew", 0), ("ew", 2), ("upgrad", 0)])
def test_an_fp16_sgd_step_moves_the_weights_as_fp32_does(
    fp16_runs: None, method: str, zero_stage: int
) -> None:
    # Plain SGD is not invariant to a gradient's scale (Adam nearly is): an update 65536×
    # too small, as DeepSpeed's ZeRO-0 fp16 path gives where the loss goes in unscaled,
    # shows here. UPGrad's update goes through the fused step's surrogate loss.
    def moved(precision: str) -> torch.Tensor:
        spec = _spec(
            deepspeed={"precision": precision, "zero_stage": zero_stage},
            gpus_per_worker=1 if precision == "fp16" else 0,
            optimizer={"name": "sgd", "momentum": 0.0},
        )
        config = {**load_space("default").default_config(method), "optim": {"lr": 0.1}}
        runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config)
        params = list(runner.engine.module.parameters())
        before = [p.detach().float().clone() for p in params]
        images, targets, _ = next(iter(runner.train.batches(8, 0)))
        runner.train_step(images, targets)
        assert runner.engine.was_step_applied()
        return torch.cat(
            [(p.detach().float() - b).flatten() for p, b in zip(params, before, strict=True)]
        )

    fp16, fp32 = moved("fp16"), moved("fp32")
    assert fp32.norm() > 0
    assert fp16.norm() / fp32.norm() == pytest.approx(1.0, rel=0.05)
