"""Each architecture declares, through the capability protocols, what the trial may ask."""

import pytest
from torch import nn

import models
from models import MultiTaskModel, create_model, list_models

OPTIONAL = tuple(
    getattr(models, name)
    for name in (
        "InitialisedFromData",
        "OptimizerGroups",
        "ParameterCounts",
        "IncrementalTasks",
        "StagedTraining",
        "TemporalPenalty",
        "ComputeReport",
    )
)
EXPECTED = {
    "hard_sharing": set(),
    "vmm": set(),
    "rcm_resnet": {"InitialisedFromData", "OptimizerGroups", "ParameterCounts", "IncrementalTasks"},
    "vit_sharing": {"OptimizerGroups", "StagedTraining", "TemporalPenalty", "ComputeReport"},
}
SMALL = {
    "hard_sharing": {},
    "vmm": {},
    "rcm_resnet": {},
    "vit_sharing": {"depth": 1, "image_size": 32},
}


def test_every_registered_architecture_is_listed_here() -> None:
    assert set(list_models()) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_architecture_declares_its_capabilities(name: str) -> None:
    model = create_model(name, ["semseg", "depth"], num_classes=5, **SMALL[name])
    assert isinstance(model, MultiTaskModel)
    assert {p.__name__ for p in OPTIONAL if isinstance(model, p)} == EXPECTED[name]


def test_a_plain_module_has_no_capability() -> None:
    plain = nn.Linear(2, 2)
    assert not isinstance(plain, MultiTaskModel)
    assert not any(isinstance(plain, p) for p in OPTIONAL)
