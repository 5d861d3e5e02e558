"""The on-disk dataset formats by name: check a folder, or write synthetic scenes into one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import Dataset

from study.data._common import DatasetError
from study.data._synthetic import Scene, SyntheticScenes

__all__ = [
    "FORMATS",
    "DatasetFormat",
    "describe_dataset",
    "format_tasks",
    "open_dataset",
    "synthesize",
]

#: ImageNet statistics: real images are normalised as pretrained encoders expect.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

DatasetFormat = Literal["nyud", "pascal", "voc"]
FORMATS: tuple[DatasetFormat, ...] = ("nyud", "pascal", "voc")

# The synthetic scenes' tasks that each format stores.
_TASKS: dict[DatasetFormat, tuple[str, ...]] = {
    "nyud": ("semseg", "depth", "normals", "edges"),
    "pascal": ("semseg", "normals", "edges", "saliency"),
    "voc": ("detection",),
}


def format_tasks(fmt: DatasetFormat) -> tuple[tuple[str, ...], int]:
    """The tasks a format labels and its number of semantic classes."""
    if fmt == "nyud":
        from study.data import nyud

        return nyud.TASKS, nyud.NUM_CLASSES
    if fmt == "voc":
        from study.data import voc

        return voc.TASKS, voc.NUM_CLASSES
    from study.data import pascal

    return pascal.TASKS, pascal.NUM_CLASSES


def open_dataset(
    fmt: DatasetFormat,
    root: Path,
    split: str,
    tasks: Sequence[str],
    image_size: int,
    generator: torch.Generator | None = None,
    neighbours: bool = False,
) -> Dataset:
    """A split of a dataset on disk, at ``image_size`` squared.

    With a ``generator`` the papers' training augmentation applies (scale 0.5-2, crop or
    pad, flip, photometric jitter), drawn from it; without, images are resized for
    evaluation.  With ``neighbours`` each sample also carries its neighbouring video
    frame (``neighbour``, augmented alike); only ``nyud`` stores them (``neighbours/``).
    """
    from study.data import transforms as T

    if neighbours and fmt != "nyud":
        raise DatasetError(f"{fmt} has no neighbouring frames; only nyud stores them")

    size = (image_size, image_size)
    steps: list[T.Transform]
    if generator is None:
        steps = [T.Resize(size)]
    else:
        steps = [
            T.RandomScale(0.5, 2.0, generator=generator),
            T.RandomCropPad(size, generator=generator),
            T.RandomHorizontalFlip(generator=generator),
            T.PhotometricJitter(generator=generator),
        ]
    transform = T.Compose([*steps, T.Normalize(IMAGE_MEAN, IMAGE_STD)])
    if fmt == "nyud":
        from study.data.nyud import NYUD

        return NYUD(root, split, tasks, transform=transform, neighbours=neighbours)
    if fmt == "voc":
        from study.data.voc import VOCDetection

        return VOCDetection(root, split, tasks, transform=transform)
    from study.data.pascal import PASCALContext

    return PASCALContext(root, split, tasks, transform=transform)


def describe_dataset(root: Path, fmt: DatasetFormat) -> dict[str, dict[str, int]]:
    """Per split, how many samples have an image and each task's file."""
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} not found")
    if fmt == "nyud":
        from study.data.nyud import describe

        return describe(root)
    if fmt == "voc":
        from study.data.voc import describe as describe_voc

        return describe_voc(root)
    from study.data.pascal import describe as describe_pascal

    return describe_pascal(root)


def synthesize(
    out: Path,
    fmt: DatasetFormat,
    train: int = 32,
    val: int = 8,
    image_size: int = 64,
    num_classes: int = 5,
    seed: int = 0,
    neighbours: bool = False,
) -> dict[str, dict[str, int]]:
    """Render synthetic scenes into ``out`` in the real layout of ``fmt``; its description.

    With ``neighbours`` (nyud only) each scene's neighbouring frame is written too.
    """
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"output folder {out} is not empty; expected a new or empty folder")
    if neighbours and fmt != "nyud":
        raise DatasetError(f"{fmt} has no neighbouring frames; only nyud stores them")
    splits: dict[str, Sequence[tuple[str, Scene]]] = {}
    moved: dict[str, Scene] = {}
    for split, count in (("train", train), ("val", val)):
        scenes = SyntheticScenes(
            count,
            _TASKS[fmt],
            split=split,
            image_size=image_size,
            num_classes=num_classes,
            seed=seed,
        )
        splits[split] = [(f"{split}_{i:05d}", scenes.scene(i)) for i in range(count)]
        if neighbours:
            moved |= {f"{split}_{i:05d}": scenes.neighbour_scene(i) for i in range(count)}
    _write(out, fmt, splits, moved or None)
    return describe_dataset(out, fmt)


def _write(
    out: Path,
    fmt: DatasetFormat,
    splits: Mapping[str, Sequence[tuple[str, Scene]]],
    neighbours: Mapping[str, Scene] | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "nyud":
        from study.data.nyud_write import write_nyud

        write_nyud(out, splits, neighbours=neighbours)
    elif fmt == "voc":
        from study.data.voc import write_voc

        write_voc(out, splits)
    else:
        from study.data.pascal import write_pascal

        write_pascal(out, splits)
