"""Balancing inside a real trial: Gramians, KPIs and method state through DeepSpeed."""

from pathlib import Path

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, DeepSpeedSpec, StudySpec

POTENTIALS = {"semseg": 0.5, "depth": 0.6}


def _setup(**update: object) -> TrialSetup:
    spec = StudySpec(
        name="t",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=32, val_samples=16),
        batch_size=16,
        epochs=2,
        baselines="none",
    )
    spec = spec.model_copy(update=update)
    return TrialSetup(spec=spec, tasks=tuple(spec.tasks), potentials=POTENTIALS)


def _config(method: str) -> dict:
    config = load_space("default").default_config(method)
    config["model"]["head_channels"] = 8
    return config


# One method per kind of state: learned parameters with their Adam state, a warm-started
# solver, random draws, KPI EMAs, previous losses.
@pytest.mark.parametrize("method", ["uw", "gradnorm", "nash_mtl", "pcgrad", "amtl", "famo"])
def test_method_state_resumes_exactly(method: str, tmp_path: Path) -> None:
    setup = _setup()
    straight = TrialRunner(setup, _config(method))
    straight.run_epoch()
    expected = straight.run_epoch()

    first = TrialRunner(setup, _config(method))
    first.run_epoch()
    first.save(tmp_path)
    resumed = TrialRunner(setup, _config(method))
    resumed.restore(tmp_path)
    got = resumed.run_epoch()
    for key in ("val_loss", "weight/semseg", "weight/depth"):
        assert got[key] == expected[key], key


def test_kpi_methods_receive_validation_kpis() -> None:
    runner = TrialRunner(_setup(), _config("amtl"))
    report = runner.run_epoch()
    expected = torch.tensor([report["semseg/miou"], report["depth/delta1"]], dtype=torch.float64)
    assert torch.allclose(runner.balancer.kpis, expected)
    # Reported for the plots: each task's achievement, its KPI over its potential.
    for task, kpi in zip(("semseg", "depth"), expected.tolist(), strict=True):
        assert report[f"achievement/{task}"] == pytest.approx(kpi / POTENTIALS[task])
    assert "achievement/semseg" not in TrialRunner(_setup(), _config("dwa")).run_epoch()


@pytest.mark.parametrize("space", ["params", "representation"])
def test_gradient_method_trains_under_zero2_bf16(space: str) -> None:
    setup = _setup(gradient_space=space, deepspeed=DeepSpeedSpec(zero_stage=2, precision="bf16"))
    runner = TrialRunner(setup, _config("mgda"))
    first, second = runner.run_epoch(), runner.run_epoch()
    assert torch.isfinite(torch.tensor([first["val_loss"], second["val_loss"]])).all()
    weights = torch.tensor([second["weight/semseg"], second["weight/depth"]])
    assert (weights >= 0).all() and weights.sum().item() == pytest.approx(1.0, abs=1e-3)


def test_nan_loss_fails_the_trial_with_the_task_named() -> None:
    runner = TrialRunner(_setup(), _config("pcgrad"))
    # A copy: the rendered split is cached and shared by every trial in the process.
    targets = {
        **runner.train.targets,
        "depth": torch.full_like(runner.train.targets["depth"], float("inf")),
    }
    runner.train = type(runner.train)(runner.train.images, targets)
    with pytest.raises(FloatingPointError, match="depth"):
        runner.train_epoch()
