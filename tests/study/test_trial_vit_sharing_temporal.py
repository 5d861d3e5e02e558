"""Staged vit_sharing trials with the temporal penalty: neighbouring frames ride along."""

import math
from pathlib import Path

import torch

from study.spec import DatasetSpec, StageSpec, StudySpec
from study.trial import TrialRunner, TrialSetup

STAGES = (StageSpec(task="semseg", step="base"), StageSpec(task="depth", step="gates"))


def _runner(stage: StageSpec, init_from: Path | None, weight: float) -> TrialRunner:
    spec = StudySpec(
        name="vt",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=8, val_samples=4),
        architecture="vit_sharing",
        model={
            "patch_size": 8,
            "depth": 2,
            "decoder_width": 16,
            "image_size": 32,
            "temporal_l1_weight": weight,
        },
        methods=["ew"],
        batch_size=4,
        epochs=1,
        stages=STAGES,
        baselines="none",
    )
    setup = TrialSetup(
        spec=spec,
        tasks=tuple(spec.tasks),
        stage=stage,
        init_from=None if init_from is None else str(init_from),
    )
    return TrialRunner(setup, {"method": "ew", "optim": {"lr": 1e-3}})


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
    runner = _runner(STAGES[1], None, 1e-4)
    assert len(next(iter(runner.train.batches(4, 0)))) == 4  # images, targets, labelled, frames
    seen = _counted(runner)
    report = runner.run_epoch()
    assert len(seen) == 2 and all(v > 0 and math.isfinite(v) for v in seen)
    assert math.isfinite(report["train_loss/depth"]) and math.isfinite(report["val_loss"])
    assert math.isfinite(report["depth/rmse"])


def test_without_the_penalty_no_frame_is_loaded() -> None:
    runner = _runner(STAGES[0], None, 0.0)
    assert len(next(iter(runner.train.batches(4, 0)))) == 3
