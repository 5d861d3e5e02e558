"""Staged training of vit_sharing: each stage starts from the last and trains its part."""

import math
from pathlib import Path

import torch

from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StageSpec, StudySpec

STAGES = (
    StageSpec(task="semseg", step="base"),
    StageSpec(task="depth", step="gates"),
    StageSpec(task="depth", step="masked"),
)


def _spec(**model: float) -> StudySpec:
    return StudySpec(
        name="vs",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=8, val_samples=4),
        architecture="vit_sharing",
        model={"patch_size": 8, "depth": 2, "decoder_width": 16, "image_size": 32, **model},
        methods=["ew"],
        batch_size=4,
        epochs=1,
        stages=STAGES,
        baselines="none",
    )


def _runner(stage: StageSpec, init_from: Path | None, **model: float) -> TrialRunner:
    spec = _spec(**model)
    setup = TrialSetup(
        spec=spec,
        tasks=tuple(spec.tasks),
        stage=stage,
        init_from=None if init_from is None else str(init_from),
    )
    return TrialRunner(setup, {"method": "ew", "optim": {"lr": 1e-3}})


def _semseg(runner: TrialRunner) -> torch.Tensor:
    images, _, _ = next(iter(runner.val.batches(4, None)))
    runner.model.eval()
    with torch.no_grad():
        return runner.model(images, tasks=("semseg",))["semseg"]


def test_stages_chain_and_leave_the_base_task_alone(tmp_path: Path) -> None:
    base = _runner(STAGES[0], None)
    report = base.run_epoch()
    assert report["training_task"] == "semseg" and "depth/rmse" not in report
    assert report["compute/weight_density"] == 1.0  # the base task owns every weight
    base.save_model(tmp_path / "base.pt")
    expected = _semseg(base)

    gates = _runner(STAGES[1], tmp_path / "base.pt")
    assert torch.equal(_semseg(gates), expected)
    encoder = {k: v.clone() for k, v in gates.model.encoder.state_dict().items()}
    report = gates.run_epoch()
    assert 0 < report["compute/weight_density"] <= 1
    assert report["stage_kpi"] == report["depth/delta1"]  # the KPI of the task it trains
    assert report["compute/gflops"] < report["compute/dense_gflops"] or (
        report["compute/weight_density"] > 0.5
    )
    assert all(torch.equal(v, gates.model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert torch.equal(_semseg(gates), expected)
    gates.save_model(tmp_path / "gates.pt")

    masked = _runner(STAGES[2], tmp_path / "gates.pt")
    mask_before = [g.mask.clone() for g in masked.model.deltas["depth"].gated()]
    masked.run_epoch()
    deltas = masked.model.deltas["depth"].gated()
    for gated, mask in zip(deltas, mask_before, strict=True):
        assert torch.equal(gated.mask, mask)
    assert torch.equal(_semseg(masked), expected)


def _counted(runner: TrialRunner) -> list[float]:
    """Records each temporal penalty the trial adds."""
    seen: list[float] = []
    penalty = runner.model.temporal_penalty

    def spy(*args: torch.Tensor) -> torch.Tensor:
        value = penalty(*args)
        seen.append(float(value.detach()))
        return value

    runner.model.temporal_penalty = spy  # type: ignore[method-assign]
    return seen


def test_a_staged_trial_adds_the_temporal_penalty() -> None:
    # A sub-task's gates stage: the penalty reaches ΔW through sampled gates.
    runner = _runner(STAGES[1], None, temporal_l1_weight=1e-4)
    assert len(next(iter(runner.train.batches(4, 0)))) == 4  # images, targets, labelled, frames
    seen = _counted(runner)
    report = runner.run_epoch()
    assert len(seen) == 2 and all(v > 0 and math.isfinite(v) for v in seen)
    assert math.isfinite(report["train_loss/depth"]) and math.isfinite(report["val_loss"])
    assert math.isfinite(report["depth/rmse"])


def test_without_the_penalty_no_frame_is_loaded() -> None:
    runner = _runner(STAGES[0], None, temporal_l1_weight=0.0)
    assert len(next(iter(runner.train.batches(4, 0)))) == 3
