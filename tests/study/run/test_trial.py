"""A trial on the real DeepSpeed engine: it learns, checkpoints, and resumes exactly."""

from pathlib import Path

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, DeepSpeedSpec, StudySpec


@pytest.fixture(scope="module")
def setup() -> TrialSetup:
    spec = StudySpec(
        name="t",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=32, val_samples=16),
        model={"backbone": "regnetx_002"},
        batch_size=16,
        epochs=3,
        baselines="none",
    )
    return TrialSetup(spec=spec, tasks=tuple(spec.tasks))


def _config(method: str = "dwa") -> dict:
    config = load_space("default").default_config(method)
    config["model"]["head_channels"] = 8
    return config


def test_report_carries_every_task_metric_loss_and_weight(setup: TrialSetup) -> None:
    report = TrialRunner(setup, _config("ew")).run_epoch()
    assert report["epoch"] == 1 and report["gflops"] > 0 and report["params"] > 0
    # One shared encoder instead of two: less than two single-task models, more than one.
    assert 0.5 < report["gflops_ratio"] < 1.0
    assert report["gflops_single_task_sum"] == pytest.approx(
        report["gflops"] / report["gflops_ratio"]
    )
    for key in ("semseg/miou", "semseg/pixel_acc", "depth/rmse", "depth/delta1"):
        assert 0 <= report[key] < float("inf")
    assert report["weight/semseg"] == report["weight/depth"] == 1.0
    assert report["val_loss"] == pytest.approx(report["val_loss/semseg"] + report["val_loss/depth"])
    assert "delta_m" not in report


def test_delta_m_is_reported_against_references(setup: TrialSetup) -> None:
    refs = {
        "semseg": {"miou": 0.5, "pixel_acc": 0.5},
        "depth": {"rmse": 1.0, "abs_rel": 1.0, "delta1": 0.5},
    }
    with_refs = TrialSetup(spec=setup.spec, tasks=setup.tasks, references=refs)
    report = TrialRunner(with_refs, _config("ew")).run_epoch()
    assert isinstance(report["delta_m"], float)


def test_single_task_trial_trains_only_its_task(setup: TrialSetup) -> None:
    single = TrialSetup(spec=setup.spec, tasks=setup.tasks, kind="single_task")
    runner = TrialRunner(single, {**_config("ew"), "task": "depth"})
    assert list(runner.tasks) == ["depth"]
    assert "depth/rmse" in runner.run_epoch() and "semseg/miou" not in runner.run_epoch()


def test_resume_from_checkpoint_continues_exactly(setup: TrialSetup, tmp_path: Path) -> None:
    straight = TrialRunner(setup, _config())
    for _ in range(3):
        expected = straight.run_epoch()

    first = TrialRunner(setup, _config())
    first.run_epoch()
    first.run_epoch()
    first.save(tmp_path)

    resumed = TrialRunner(setup, _config())
    resumed.restore(tmp_path)
    assert resumed.epoch == 2
    assert torch.equal(
        resumed.balancer.state_dict()["weights"], first.balancer.state_dict()["weights"]
    )
    got = resumed.run_epoch()
    assert got["epoch"] == 3
    for key in ("val_loss", "semseg/miou", "depth/rmse", "weight/semseg"):
        assert got[key] == expected[key], key
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("zero_stage", [0, 2])
def test_bf16_trial_trains(setup: TrialSetup, zero_stage: int) -> None:
    deepspeed = DeepSpeedSpec(zero_stage=zero_stage, precision="bf16")
    spec = setup.spec.model_copy(update={"deepspeed": deepspeed})
    runner = TrialRunner(TrialSetup(spec=spec, tasks=setup.tasks), _config("ew"))
    assert {p.dtype for p in runner.engine.module.parameters()} == {torch.bfloat16}
    first, second = runner.run_epoch(), runner.run_epoch()
    assert torch.isfinite(torch.tensor([first["val_loss"], second["val_loss"]])).all()
    assert second["train_loss/semseg"] < first["train_loss/semseg"]


def test_single_process_rendezvous_ignores_inherited_variables() -> None:
    import subprocess
    import sys

    # A Ray worker inherits the driver's environment, which may name a port in use.
    code = (
        "import os; from study.run import ensure_distributed; ensure_distributed(); "
        "import torch.distributed as d; print(d.get_world_size(), os.environ['MASTER_PORT'])"
    )
    env = {**__import__("os").environ, "RANK": "3", "WORLD_SIZE": "8", "MASTER_PORT": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    world, port = done.stdout.split()[-2:]
    assert world == "1" and port != "1"
    # No DeepSpeed shared-memory buffer of that process is left behind (none is made).
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def test_a_diverged_trial_fails_with_its_reason(setup: TrialSetup) -> None:
    runner = TrialRunner(setup, _config("ew"))
    with torch.no_grad():
        runner.model.heads["depth"].predict.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"non-finite .*'depth'"):
        runner.run_epoch()
