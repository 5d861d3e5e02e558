"""Trials read datasets on disk through the real loaders, augmentation replayed by seed."""

from pathlib import Path

import pytest
import torch

from study.data import synthesize
from study.run import DiskSplit, TrialRunner, TrialSetup, trial_splits
from study.spec import SpecError, load_spec

SPEC = """
name: on-disk
dataset: {{name: {fmt}, root: data, image_size: 32, num_classes: {classes}}}
tasks: {tasks}
architecture: {architecture}
model: {model}
batch_size: 4
epochs: 1
baselines: none
"""
CASES = {
    "nyud": (40, ["semseg", "depth", "normals", "edges"]),
    "pascal": (21, ["semseg", "edges", "normals", "saliency"]),
    "voc": (21, ["detection"]),
}


def _spec(tmp_path: Path, fmt: str, **replace: str) -> Path:
    classes, tasks = CASES[fmt]
    detection = "detection" in tasks
    text = SPEC.format(
        fmt=fmt,
        classes=classes,
        tasks=tasks,
        architecture="vmm" if detection else "hard_sharing",
        model="{backbone: efficientnet_b0, neck_channels: 16}" if detection else "{}",
    )
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("fmt", list(CASES))
def test_a_trial_trains_on_a_dataset_in_its_real_layout(tmp_path: Path, fmt: str) -> None:
    synthesize(tmp_path / "data", fmt, train=6, val=3, image_size=24)
    spec, space = load_spec(_spec(tmp_path, fmt))
    train, val = trial_splits(spec.dataset, spec.seed, tuple(spec.tasks))
    assert isinstance(train, DiskSplit) and (len(train), len(val)) == (6, 3)

    first = [images for images, *_ in train.batches(4, seed=7)]
    again = [images for images, *_ in train.batches(4, seed=7)]
    other = [images for images, *_ in train.batches(4, seed=8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert first[0].shape[-2:] == (32, 32)  # cropped or padded to the training size

    config = space.default_config("ew")
    config["model"]["head_channels"] = 8
    report = TrialRunner(TrialSetup(spec=spec, tasks=tuple(spec.tasks)), config).run_epoch()
    for task in spec.tasks:
        assert torch.isfinite(torch.tensor(report[f"val_loss/{task}"]))


@pytest.mark.parametrize(
    ("fmt", "replace", "expected"),
    [
        ("nyud", {"root: data": "root: nowhere"}, "dataset.root': dataset folder"),
        ("nyud", {"num_classes: 40": "num_classes: 5"}, "nyud has 40 classes"),
        ("nyud", {"[": "[human_parts, "}, "does not label ['human_parts']"),
        ("pascal", {", root: data": ""}, "needs 'root'"),
    ],
)
def test_bad_dataset_fields_are_one_line(
    tmp_path: Path, fmt: str, replace: dict[str, str], expected: str
) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(SpecError) as info:
        load_spec(_spec(tmp_path, fmt, **replace))
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_worker_batches_deal_each_global_batch_out_once() -> None:
    from study.run import TensorSplit, worker_batches

    images = torch.arange(20, dtype=torch.float32).view(20, 1, 1, 1)
    split = TensorSplit(images=images, targets={"depth": images.clone()})
    whole = [b[0].flatten().tolist() for b in split.batches(8, seed=5)]
    parts = [
        [b[0].flatten().tolist() for b in worker_batches(split, 4, 5, rank, 2, drop_last=True)]
        for rank in (0, 1)
    ]
    # Two full global batches of 8: rank 0 takes each one's first half, rank 1 the second.
    assert [a + b for a, b in zip(*parts, strict=True)] == whole[:2]
    evaluated = [
        b[0].flatten().tolist() for rank in (0, 1) for b in worker_batches(split, 4, None, rank, 2)
    ]
    assert sorted(sum(evaluated, [])) == list(range(20))  # evaluation drops nothing
    assert [b[0].shape[0] for b in worker_batches(split, 4, None, 0, 1)] == [4] * 5
