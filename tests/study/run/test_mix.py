"""A partially labelled mix: parts label some tasks, batches draw evenly, losses stay honest."""

from pathlib import Path

import pytest
import torch

from search_spaces import load_space
from study.run import TrialRunner, TrialSetup, trial_splits
from study.spec import DatasetSpec, PartSpec, SpecError, StudySpec, load_spec

MIX = DatasetSpec(
    image_size=32,
    parts=(
        PartSpec(tasks=("detection", "semseg"), train_samples=6, val_samples=2),
        PartSpec(tasks=("depth",), train_samples=4, val_samples=2),
    ),
    sampler="balanced",
)
TASKS = ("semseg", "depth", "detection")


def test_parts_label_their_tasks_only() -> None:
    train, val = trial_splits(MIX, 0, TASKS)
    assert (len(train), len(val)) == (10, 4)
    images, targets, labelled = next(train.batches(10, None))
    assert labelled["semseg"].tolist() == [True] * 6 + [False] * 4
    assert labelled["depth"].tolist() == [False] * 6 + [True] * 4
    assert (targets["semseg"][6:] == 255).all() and (targets["depth"][:6] == 0).all()
    assert (targets["detection"][6:, :, 4] == -1).all() and (
        targets["detection"][:6, :, 4] >= 0
    ).any()
    # The parts are different scenes, not one set relabelled.
    assert not torch.equal(images[0], images[6])


def test_balanced_batches_draw_evenly_from_each_part() -> None:
    train, _ = trial_splits(MIX, 0, TASKS)
    for _, _, labelled in train.batches(4, seed=3):
        depth = int(labelled["depth"].sum())
        assert depth == 2 or len(labelled["depth"]) < 4


def test_vmm_trains_on_the_mix_and_counts_labels() -> None:
    spec = StudySpec(
        name="mix",
        tasks=list(TASKS),
        dataset=MIX,
        architecture="vmm",
        model={"backbone": "efficientnet_b0", "neck_channels": 16},
        batch_size=4,
        baselines="none",
    )
    config = load_space("default").default_config("amtl")
    config["model"] = {}
    setup = TrialSetup(spec=spec, tasks=TASKS, potentials=dict.fromkeys(TASKS, 0.5))
    report = TrialRunner(setup, config).run_epoch()
    assert [report[f"labels/{t}"] for t in TASKS] == [6, 4, 6]
    assert all(torch.isfinite(torch.tensor(report[f"val_loss/{t}"])) for t in TASKS)


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (
            "{parts: [{tasks: [sonar], train_samples: 2, val_samples: 1}]}",
            "does not label ['sonar']",
        ),
        (
            "{parts: [{tasks: [depth], train_samples: 2, val_samples: 1}]}",
            "does not label ['semseg']",
        ),
        (
            "{name: nyud, root: ., num_classes: 40, "
            "parts: [{tasks: [depth], train_samples: 2, val_samples: 1}]}",
            "a mix of parts takes no name",
        ),
    ],
)
def test_bad_parts_are_one_line(tmp_path: Path, dataset: str, expected: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(f"name: m\ntasks: [semseg, depth]\ndataset: {dataset}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_folders_on_disk_mix_like_the_paper(tmp_path: Path) -> None:
    from study.data import synthesize

    synthesize(tmp_path / "voc", "voc", train=4, val=2, image_size=32)
    synthesize(tmp_path / "nyud", "nyud", train=4, val=2, image_size=32)
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: m\ntasks: [detection, depth]\narchitecture: vmm\n"
        "model: {backbone: efficientnet_b0, neck_channels: 16}\n"
        "batch_size: 4\nbaselines: none\n"
        "dataset: {image_size: 32, num_classes: 21, sampler: balanced, parts: ["
        "{name: voc, root: voc, tasks: [detection]}, {name: nyud, root: nyud, tasks: [depth]}]}\n"
    )
    spec, space = load_spec(path)
    train, val = trial_splits(spec.dataset, spec.seed, ("detection", "depth"))
    assert (len(train), len(val)) == (8, 4)
    for _, targets, labelled in train.batches(4, seed=1):
        assert labelled["depth"].sum() == 2 and labelled["detection"].sum() == 2
        assert (targets["depth"][labelled["detection"]] == 0).all()
        assert (targets["detection"][labelled["depth"]][..., 4] == -1).all()
    config = space.default_config("ew")
    config["model"] = {}
    report = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config).run_epoch()
    assert (report["labels/detection"], report["labels/depth"]) == (4, 4)


def test_a_part_with_other_classes_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "voc").mkdir()
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: m\ntasks: [detection]\narchitecture: vmm\n"
        "dataset: {parts: [{name: voc, root: voc, tasks: [detection]}]}\n"
    )
    with pytest.raises(SpecError, match="set num_classes: 21"):
        load_spec(path)
