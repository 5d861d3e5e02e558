"""Neighbouring video frames: synthetic scenes a moment later, NYUD's neighbours/ folder,
and augmentations that move a frame and its neighbour alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from study.data import DatasetError, open_dataset, synthesize
from study.data._synthetic import SyntheticScenes
from study.data.nyud import NYUD, TASKS, describe

SIZE = 32


def test_a_synthetic_neighbour_is_the_scene_slightly_moved() -> None:
    scenes = SyntheticScenes(4, ["semseg"], image_size=SIZE, seed=3, neighbours=True)
    plain = SyntheticScenes(4, ["semseg"], image_size=SIZE, seed=3)
    changed = []
    for i in range(4):
        item = scenes[i]
        assert torch.equal(item["image"], plain[i]["image"])  # the frame is as before
        assert torch.equal(item["neighbour"], scenes.neighbour(i))
        before, after = scenes.scene(i), scenes.neighbour_scene(i)
        moved = np.abs(before.image - after.image).max(axis=2) > 0
        changed.append(moved.mean())
        # The floor stays put: background in both frames is equal there, but for a rim
        # around the objects (its normals come from the floor pixels beside it).
        still = (before.semseg == 0) & (after.semseg == 0)
        assert (before.image[still] == after.image[still]).all(axis=1).mean() > 0.95
    assert 0.0 < max(changed) < 0.5
    assert "neighbour" not in plain[0]


def _nyud_with_neighbours(tmp_path: Path) -> Path:
    root = tmp_path / "nyud"
    synthesize(root, "nyud", train=3, val=1, image_size=SIZE, seed=0, neighbours=True)
    return root


def test_nyud_reads_neighbours_written_on_disk(tmp_path: Path) -> None:
    root = _nyud_with_neighbours(tmp_path)
    assert sorted(p.name for p in (root / "neighbours").iterdir())[:2] == [
        "train_00000.jpg",
        "train_00001.jpg",
    ]
    assert describe(root)["train"]["neighbours"] == 3
    dataset = NYUD(root, "train", TASKS, neighbours=True)
    scenes = SyntheticScenes(3, list(TASKS), image_size=SIZE, seed=0)
    for i in range(3):
        sample = dataset[i]
        assert sample["neighbour"].shape == sample["image"].shape
        stored = np.asarray(Image.open(root / "neighbours" / f"train_{i:05d}.jpg")) / 255.0
        np.testing.assert_allclose(sample["neighbour"].numpy().transpose(1, 2, 0), stored)
        # JPEG (quality 95) of a noisy 32-pixel image: close, not exact.
        assert np.abs(stored - scenes.neighbour_scene(i).image).mean() < 0.05
        assert not torch.equal(sample["neighbour"], sample["image"])
    assert "neighbour" not in NYUD(root, "train", TASKS)[0]  # read only when asked


def test_a_missing_neighbour_is_one_line(tmp_path: Path) -> None:
    root = _nyud_with_neighbours(tmp_path)
    missing = root / "neighbours" / "train_00001.jpg"
    missing.unlink()
    with pytest.raises(DatasetError) as err:
        NYUD(root, "train", ["depth"], neighbours=True)
    message = str(err.value)
    assert "neighbouring frame" in message and str(missing) in message and "\n" not in message
    assert len(NYUD(root, "train", ["depth"])) == 3  # without neighbours it still loads

    shutil.rmtree(root / "neighbours")
    with pytest.raises(DatasetError) as err:
        NYUD(root, "train", ["depth"], neighbours=True)
    assert str(root / "neighbours") in str(err.value) and "\n" not in str(err.value)


def test_a_neighbour_of_another_size_is_refused(tmp_path: Path) -> None:
    root = _nyud_with_neighbours(tmp_path)
    path = root / "neighbours" / "train_00000.jpg"
    Image.fromarray(np.zeros((SIZE, SIZE + 8, 3), np.uint8)).save(path)
    with pytest.raises(DatasetError, match="neighbouring frame") as err:
        NYUD(root, "train", ["depth"], neighbours=True)[0]
    assert str(path) in str(err.value)


def test_augmentation_moves_a_frame_and_its_neighbour_alike(tmp_path: Path) -> None:
    root = _nyud_with_neighbours(tmp_path)
    for image in (root / "images").iterdir():  # a neighbour equal to its frame
        shutil.copy(image, root / "neighbours" / image.name)
    generator = torch.Generator().manual_seed(5)
    dataset = open_dataset("nyud", root, "train", TASKS, 24, generator, neighbours=True)
    for i in range(3):
        sample = dataset[i]
        assert sample["image"].shape == (3, 24, 24)
        assert torch.equal(sample["neighbour"], sample["image"])
    with pytest.raises(DatasetError, match="only nyud"):
        open_dataset("pascal", root, "train", ["semseg"], 24, neighbours=True)
