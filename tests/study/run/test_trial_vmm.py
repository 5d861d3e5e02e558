"""A VMM trial with detection on synthetic scenes: boxes in, mAP out, any balancer."""

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec


@pytest.mark.parametrize("method", ["ew", "mgda"])
def test_vmm_trains_detection_with_dense_tasks(method: str) -> None:
    spec = StudySpec(
        name="v",
        tasks=["semseg", "depth", "detection"],
        dataset=DatasetSpec(image_size=64, train_samples=8, val_samples=4),
        architecture="vmm",
        model={"backbone": "efficientnet_b0", "neck_channels": 16},
        batch_size=4,
        baselines="none",
    )
    config = load_space("default").default_config(method)
    config["model"] = {}
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config)
    first, second = runner.run_epoch(), runner.run_epoch()
    assert 0 <= second["detection/map"] <= 1 and 0 <= second["detection/map50"] <= 1
    assert torch.isfinite(torch.tensor([first["val_loss"], second["val_loss"]])).all()
    assert second["train_loss/detection"] < first["train_loss/detection"]
    assert 0 < second["gflops_ratio"] < 1
