"""docs/EXTENDING.md, executed: a new architecture and a new dataset format, registered
from outside the packages, reach create_model, the spec, the loaders and a trial."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import models._registry
import study.data._registry
from models import (
    ComputeReport,
    IncrementalTasks,
    InitialisedFromData,
    MultiTaskModel,
    OptimizerGroups,
    StagedTraining,
    TemporalPenalty,
    count_parameters,
    create_model,
    get_task,
    list_models,
    register_model,
    task_costs,
)
from models.tasks import activate
from search_spaces import load_space
from study.data import (
    DatasetError,
    DatasetFormat,
    Sample,
    Scene,
    dataset_names,
    describe_dataset,
    get_format,
    open_dataset,
    register_dataset,
    synthesize,
)
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec, check_runnable, load_spec

ARCH = "tiny_conv_extending"
FORMAT = "tiny_extending"
CLASSES = 5  # what `mtlstudy data synth` renders, so its scenes fit the format
TASKS = ("semseg", "depth")


# --------------------------------------------------------------------------- architecture


class TinyConv(nn.Module):
    """Two shared convolutions and a 1×1 head per task: MultiTaskModel and nothing more."""

    def __init__(self, tasks: Sequence[str], num_classes: int = 5, head_channels: int = 8) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        width = head_channels
        self.trunk = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict(
            {t: nn.Conv2d(width, get_task(t, num_classes).channels, 1) for t in self.tasks}
        )

    def forward(
        self, x: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        names = self.tasks if tasks is None else tasks
        return {t: activate(t, self.heads[t](features)) for t in names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.trunk.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        yield from self.heads[task].parameters()

    def representation_module(self) -> nn.Module:
        return self.trunk

    def last_shared_module(self) -> nn.Module:
        return self.trunk[2]


@pytest.fixture
def architecture() -> Iterator[str]:
    @register_model
    def tiny_conv_extending(tasks: Sequence[str], **kwargs: Any) -> TinyConv:
        return TinyConv(tasks, **kwargs)

    # The registry is global: other tests list every architecture.
    yield ARCH
    models._registry._MODELS.pop(ARCH, None)
    assert ARCH not in list_models()


def test_a_registered_architecture_builds_predicts_and_is_costed(architecture: str) -> None:
    assert architecture in list_models()
    model = create_model(architecture, TASKS, num_classes=CLASSES, head_channels=4)
    assert isinstance(model, MultiTaskModel)
    optional = (
        InitialisedFromData,
        OptimizerGroups,
        IncrementalTasks,
        StagedTraining,
        TemporalPenalty,
        ComputeReport,
    )
    assert not any(isinstance(model, p) for p in optional)

    out = model(torch.rand(2, 3, 16, 20))
    assert set(out) == set(TASKS)
    assert out["semseg"].shape == (2, CLASSES, 16, 20)
    assert out["depth"].shape == (2, 1, 16, 20) and bool((out["depth"] > 0).all())
    assert set(model(torch.rand(1, 3, 8, 8), tasks=("depth",))) == {"depth"}

    costs = task_costs(model, 16)
    trunk = count_parameters(model.trunk)
    for task in TASKS:
        head = count_parameters(model.heads[task])
        assert costs[task]["params_stored"] == head
        assert costs[task]["params_trainable"] == trunk + head
        assert costs[task]["gflops"] > 0


def test_a_registered_architecture_passes_the_spec_checks(
    architecture: str, tmp_path: Path
) -> None:
    spec = StudySpec(
        name="x", tasks=list(TASKS), architecture=architecture, model={}, baselines="none"
    )
    # The default space's model entry (head_channels) reaches the factory.
    check_runnable(tmp_path / "spec.yaml", spec, load_space("default"))
    with pytest.raises(ValueError, match="unknown architecture"):
        StudySpec(name="x", tasks=list(TASKS), architecture=architecture + "_not")


# --------------------------------------------------------------------------- dataset


def _read(root: Path, split: str, tasks: Sequence[str], transform: Any = None) -> Dataset:
    return _TinySplit(root, split, tasks, transform)


class _TinySplit(Dataset):
    """``<root>/<split>/<id>.pt``, each a dict of an image and a semseg map."""

    def __init__(self, root: Path, split: str, tasks: Sequence[str], transform: Any) -> None:
        folder = Path(root) / split
        if not folder.is_dir():
            raise DatasetError(f"{FORMAT} split: folder {folder} not found")
        self.files = sorted(folder.glob("*.pt"))
        self.tasks = tuple(tasks)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Sample:
        data = torch.load(self.files[index], weights_only=True)
        sample = Sample(
            name=self.files[index].stem,
            image=data["image"],
            targets={t: data[t] for t in self.tasks},
            labelled={t: True for t in self.tasks},
        )
        return self.transform(sample) if self.transform is not None else sample


def _describe(root: Path) -> dict[str, dict[str, int]]:
    return {
        split: {"images": n, "semseg": n}
        for split in ("train", "val")
        if (n := len(list((root / split).glob("*.pt"))))
    }


def _write(out: Path, splits: Mapping[str, Sequence[tuple[str, Scene]]]) -> None:
    for split, scenes in splits.items():
        (out / split).mkdir(parents=True)
        for name, scene in scenes:
            image = torch.from_numpy(scene.image).permute(2, 0, 1).contiguous()
            semseg = torch.from_numpy(scene.semseg)
            torch.save({"image": image, "semseg": semseg}, out / split / f"{name}.pt")


@pytest.fixture
def dataset_format() -> Iterator[DatasetFormat]:
    fmt = DatasetFormat(FORMAT, ("semseg",), CLASSES, _read, _describe, _write)
    register_dataset(fmt)
    yield fmt
    study.data._registry._FORMATS.pop(FORMAT, None)
    assert FORMAT not in dataset_names()


def test_a_registered_format_reaches_the_spec_and_the_loaders(
    dataset_format: DatasetFormat, tmp_path: Path
) -> None:
    assert get_format(FORMAT) is dataset_format
    assert FORMAT in dataset_names(synthetic=False)

    spec = DatasetSpec(name=FORMAT, root=str(tmp_path), num_classes=CLASSES)
    assert spec.tasks() == ("semseg",)
    with pytest.raises(ValueError, match=f"{FORMAT} has {CLASSES} classes"):
        DatasetSpec(name=FORMAT, root=str(tmp_path), num_classes=CLASSES + 1)

    # What `mtlstudy data synth` and `mtlstudy data check` call.
    counts = synthesize(tmp_path / "data", FORMAT, train=3, val=2, image_size=16)
    assert counts == {"train": {"images": 3, "semseg": 3}, "val": {"images": 2, "semseg": 2}}
    assert describe_dataset(tmp_path / "data", FORMAT) == counts

    val = open_dataset(FORMAT, tmp_path / "data", "val", ("semseg",), image_size=8)
    sample = val[0]
    assert sample["image"].shape == (3, 8, 8)  # resized by the platform's transform
    assert sample["targets"]["semseg"].shape == (8, 8)
    assert int(sample["targets"]["semseg"].max()) < CLASSES


SPEC = f"""
name: extending
dataset: {{name: {FORMAT}, root: data, image_size: 16, num_classes: {CLASSES}}}
tasks: [semseg]
architecture: {ARCH}
batch_size: 2
epochs: 1
baselines: none
"""


def test_a_trial_trains_the_new_architecture_on_the_new_format(
    architecture: str, dataset_format: DatasetFormat, tmp_path: Path
) -> None:
    synthesize(tmp_path / "data", FORMAT, train=4, val=2, image_size=16)
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec, space = load_spec(tmp_path / "spec.yaml")
    config = space.default_config("ew")
    config["model"]["head_channels"] = 4
    report = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config).run_epoch()
    assert 0 <= report["semseg/miou"] <= 1
    assert torch.isfinite(torch.tensor(report["val_loss/semseg"]))
    assert report["params_stored/semseg"] == 4 * CLASSES + CLASSES  # the 1×1 head
