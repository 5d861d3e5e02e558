"""Training splits with neighbouring frames: only when asked, sliced like the images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.data import DatasetError, synthesize
from study.run import train_with_neighbours, trial_splits, worker_batches
from study.spec import DatasetSpec, PartSpec, missing_neighbours

DATA = DatasetSpec(image_size=32, train_samples=6, val_samples=2)
TASKS = ("semseg", "depth")


def test_synthetic_frames_only_when_asked() -> None:
    train, val = trial_splits(DATA, 0, TASKS)
    assert all(len(batch) == 3 for batch in train.batches(4, seed=1))
    frames = train_with_neighbours(DATA, 0, TASKS)
    batches = list(frames.batches(4, seed=1))
    plain = list(train.batches(4, seed=1))
    for (images, targets, _, neighbours), (same, same_targets, _) in zip(
        batches, plain, strict=True
    ):
        assert torch.equal(images, same) and torch.equal(targets["depth"], same_targets["depth"])
        assert neighbours.shape == images.shape and not torch.equal(neighbours, images)
    # Two workers each take their half of every global batch, frames included.
    halves = list(worker_batches(frames, 2, 1, rank=1, world=2, drop_last=True))
    whole = list(frames.batches(4, seed=1))[0]
    assert len(halves[0]) == 4
    assert torch.equal(halves[0][0], whole[0][2:]) and torch.equal(halves[0][3], whole[3][2:])


def test_nyud_frames_from_disk(tmp_path: Path) -> None:
    root = tmp_path / "nyud"
    synthesize(root, "nyud", train=4, val=1, image_size=32, neighbours=True)
    data = DatasetSpec(name="nyud", root=str(root), image_size=32, num_classes=40)
    assert missing_neighbours(data) is None
    images, targets, labelled, neighbours = next(
        train_with_neighbours(data, 0, ("depth",)).batches(2, seed=3)
    )
    assert neighbours.shape == images.shape == (2, 3, 32, 32)
    train, _ = trial_splits(data, 0, ("depth",))
    assert len(next(train.batches(2, seed=3))) == 3


def test_datasets_without_frames_say_why(tmp_path: Path) -> None:
    root = tmp_path / "nyud"
    synthesize(root, "nyud", train=2, val=1, image_size=32)
    nyud = DatasetSpec(name="nyud", root=str(root), image_size=32, num_classes=40)
    assert "no neighbours/ folder" in str(missing_neighbours(nyud))
    mix = DatasetSpec(
        parts=(PartSpec(tasks=("depth",), train_samples=2, val_samples=1),),
    )
    assert "mix" in str(missing_neighbours(mix))
    with pytest.raises(DatasetError, match="neighbours/"):
        train_with_neighbours(nyud, 0, ("depth",))
