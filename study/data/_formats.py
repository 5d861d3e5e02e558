"""The registered on-disk formats (NYUD-MT, PASCAL-Context, VOC), and what the platform
does with any of them: open a split, count a folder's samples, write synthetic scenes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from study.data import nyud, pascal, voc
from study.data import transforms as T
from study.data._files import DatasetError
from study.data._registry import DatasetFormat, get_format, register_dataset
from study.data._synthetic import SYNTHETIC_TASKS, Scene, SyntheticScenes
from study.data.nyud_write import write_nyud

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "describe_dataset", "open_dataset", "synthesize"]

register_dataset(
    DatasetFormat("nyud", nyud.TASKS, nyud.NUM_CLASSES, nyud.NYUD, nyud.describe, write_nyud, True)
)
register_dataset(
    DatasetFormat(
        "pascal",
        pascal.TASKS,
        pascal.NUM_CLASSES,
        pascal.PASCALContext,
        pascal.describe,
        pascal.write_pascal,
        eval_size=(512, 512),  # ASTMT, MTI-Net, ATRC: every image (at most 500 a side) padded
    )
)
register_dataset(
    DatasetFormat(
        "voc",
        voc.TASKS,
        voc.NUM_CLASSES,
        voc.VOCDetection,
        voc.describe,
        voc.write_voc,
        eval_size=(512, 512),  # the PASCAL images again: padded so that a batch stacks
    )
)

#: ImageNet statistics: real images are normalised as pretrained encoders expect.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def open_dataset(
    name: str,
    root: Path,
    split: str,
    tasks: Sequence[str],
    image_size: int,
    generator: torch.Generator | None = None,
    neighbours: bool = False,
    native: bool = False,
) -> Dataset:
    """A split of the dataset format ``name`` on disk, at ``image_size`` squared.

    With a ``generator`` the papers' training augmentation applies (scale 0.5-2, crop or
    pad, flip, photometric jitter), drawn from it; without, images are resized for
    evaluation, or with ``native`` kept at their own resolution (padded to the format's
    ``eval_size`` where it has one, the padding unscored).  With ``neighbours`` each
    sample also carries its neighbouring video frame (``neighbour``, augmented alike),
    where the format stores them.
    """
    fmt = get_format(name)
    size = (image_size, image_size)
    steps: list[T.Transform]
    if generator is None and native:
        steps = [] if fmt.eval_size is None else [T.PadTo(fmt.eval_size)]
    elif generator is None:
        steps = [T.Resize(size)]
    else:
        steps = [
            T.RandomScale(0.5, 2.0, generator=generator),
            T.RandomCropPad(size, generator=generator),
            T.RandomHorizontalFlip(generator=generator),
            T.PhotometricJitter(generator=generator),
        ]
    transform = T.Compose([*steps, T.Normalize(IMAGE_MEAN, IMAGE_STD)])
    return fmt.open(root, split, tasks, transform, neighbours)


def describe_dataset(root: Path, name: str) -> dict[str, dict[str, int]]:
    """Per split, how many samples have an image and each task's file."""
    fmt = get_format(name)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} not found")
    return fmt.describe(root)


def synthesize(
    out: Path,
    name: str,
    train: int = 32,
    val: int = 8,
    image_size: int = 64,
    num_classes: int = 5,
    seed: int = 0,
    neighbours: bool = False,
) -> dict[str, dict[str, int]]:
    """Render synthetic scenes into ``out`` in the real layout of the format ``name``
    (the tasks of it that scenes render); its description. With ``neighbours`` each
    scene's neighbouring frame is written too, where the format stores them."""
    fmt = get_format(name)
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output folder {out} is not empty; expected a new or empty folder")
    fmt.check_neighbours(neighbours)
    tasks = tuple(t for t in fmt.tasks if t in SYNTHETIC_TASKS)
    splits: dict[str, Sequence[tuple[str, Scene]]] = {}
    moved: dict[str, Scene] = {}
    for split, count in (("train", train), ("val", val)):
        scenes = SyntheticScenes(
            count, tasks, split=split, image_size=image_size, num_classes=num_classes, seed=seed
        )
        splits[split] = [(f"{split}_{i:05d}", scenes.scene(i)) for i in range(count)]
        if neighbours:
            moved |= {f"{split}_{i:05d}": scenes.neighbour_scene(i) for i in range(count)}
    out.mkdir(parents=True, exist_ok=True)
    fmt.write_scenes(out, splits, moved or None)
    return describe_dataset(out, name)
