"""An RCM trial: task-conditional backbones train under DeepSpeed with frozen banks."""

import torch

from search_spaces import load_space
from study.spec import DatasetSpec, StudySpec
from study.trial import TrialRunner, TrialSetup


def test_rcm_trial_trains_and_leaves_the_banks_frozen() -> None:
    spec = StudySpec(
        name="r",
        tasks=["semseg", "depth"],
        dataset=DatasetSpec(image_size=32, train_samples=8, val_samples=4),
        architecture="rcm_resnet",
        model={"variant": "rc", "decoder_width": 16},
        batch_size=4,
        baselines="none",
    )
    config = load_space("default").default_config("ew")
    config["model"] = {}
    runner = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config)
    banks = [p.detach().clone() for p in runner.model.shared_parameters()]
    first, second = runner.run_epoch(), runner.run_epoch()
    assert torch.isfinite(torch.tensor([first["val_loss"], second["val_loss"]])).all()
    assert all(
        torch.equal(a, b) for a, b in zip(banks, runner.model.shared_parameters(), strict=True)
    )
