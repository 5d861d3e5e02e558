"""A trial's training and validation data, batch by batch.

Synthetic scenes are rendered once per process and held as tensors; datasets on disk
are read through a loader (:mod:`study.run._loader`), with the papers' augmentation on
the training split; the validation split at the dataset's own resolution by default.

A training split made by :func:`train_with_neighbours` also yields each sample's
neighbouring video frame (for ``vit_sharing``'s temporal penalty) as a fourth item of
its batches; no other split renders or reads them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import ConcatDataset, Dataset

from models.tasks import IGNORE_INDEX, get_task
from study.data import DatasetError, SyntheticScenes, open_dataset
from study.run._loader import DiskSplit
from study.run._loader import seeded_order as _order
from study.spec import DatasetSpec, PartSpec, missing_neighbours

__all__ = [
    "Batch",
    "DiskSplit",
    "FrameBatch",
    "Split",
    "TensorSplit",
    "to_device",
    "train_with_neighbours",
    "trial_splits",
    "worker_batches",
]

#: Images, targets, and per task a bool (B,) of the samples labelled for it.
Batch = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]
#: A :data:`Batch` and each image's neighbouring frame (B, 3, H, W), normalised alike.
FrameBatch = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]


class Split(Protocol):
    def __len__(self) -> int: ...

    def batches(self, batch_size: int, seed: int | None) -> Iterator[Batch | FrameBatch]:
        """Batches in an order drawn from ``seed`` (file order when None); frame batches
        from a split made with neighbouring frames."""
        ...


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    #: Per task, which samples are labelled for it (all, when None).
    labelled: dict[str, torch.Tensor] | None = None
    #: Each sample's part of a mix, for the balanced sampler (one part, when None).
    parts: torch.Tensor | None = None
    balanced: bool = False
    #: Each image's neighbouring frame: batches are then :data:`FrameBatch`.
    neighbours: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def _order(self, seed: int | None) -> torch.Tensor:
        return _order(len(self), seed, self.parts if self.balanced else None)

    def batches(self, batch_size: int, seed: int | None) -> Iterator[Batch | FrameBatch]:
        for index in self._order(seed).split(batch_size):
            if self.labelled is None:
                labelled = {t: torch.ones(len(index), dtype=torch.bool) for t in self.targets}
            else:
                labelled = {t: v[index] for t, v in self.labelled.items()}
            batch = self.images[index], {t: v[index] for t, v in self.targets.items()}, labelled
            yield batch if self.neighbours is None else (*batch, self.neighbours[index])


def _scenes(
    dataset: DatasetSpec, split: str, seed: int, tasks: tuple[str, ...], samples: int
) -> SyntheticScenes:
    return SyntheticScenes(
        samples,
        tasks,
        split=split,
        image_size=dataset.image_size,
        num_classes=dataset.num_classes,
        max_objects=dataset.max_objects,
        seed=seed,
    )


def _render(
    dataset: DatasetSpec, split: str, seed: int, tasks: tuple[str, ...], samples: int
) -> TensorSplit:
    scenes = _scenes(dataset, split, seed, tasks, samples)
    items = [scenes[i] for i in range(len(scenes))]
    return TensorSplit(
        torch.stack([item["image"] for item in items]),
        {t: torch.stack([item["targets"][t] for item in items]) for t in tasks},
    )


def _part_seed(seed: int, part: int) -> int:
    # Each part of a mix renders scenes of its own.
    return seed + 7919 * (part + 1)


#: What a target holds where it has no label (see :mod:`models.tasks`).
_NO_LABEL = {"depth": 0.0, "normals": 0.0, "detection": -1.0}


def _without_labels(task: str, target: torch.Tensor) -> torch.Tensor:
    return torch.full_like(target, _NO_LABEL.get(task, IGNORE_INDEX))


@functools.lru_cache(maxsize=4)
def _rendered(dataset: DatasetSpec, split: str, seed: int, tasks: tuple[str, ...]) -> TensorSplit:
    # Cached per process, so trials in a reused actor do not render the scenes again.
    if dataset.parts is None:
        samples = dataset.train_samples if split == "train" else dataset.val_samples
        return _render(dataset, split, seed, tasks, samples)
    pieces = []
    for k, part in enumerate(dataset.parts):
        samples = part.train_samples if split == "train" else part.val_samples
        piece = _render(dataset, split, _part_seed(seed, k), tasks, samples)
        labelled = {t: torch.full((samples,), t in part.tasks) for t in tasks}
        targets = {
            t: v if t in part.tasks else _without_labels(t, v) for t, v in piece.targets.items()
        }
        pieces.append((piece.images, targets, labelled, torch.full((samples,), k)))
    return TensorSplit(
        torch.cat([p[0] for p in pieces]),
        {t: torch.cat([p[1][t] for p in pieces]) for t in tasks},
        {t: torch.cat([p[2][t] for p in pieces]) for t in tasks},
        torch.cat([p[3] for p in pieces]),
        balanced=dataset.sampler == "balanced",
    )


#: Detection rows every part's targets are padded to, so batches from any part stack.
_DETECTION_ROWS = 64


class _PartOfMix(Dataset):
    """A part's samples with every study task present: unlabelled ones filled as no label."""

    def __init__(self, dataset: Dataset, tasks: tuple[str, ...], channels: dict[str, int]) -> None:
        self.dataset, self.tasks, self.channels = dataset, tasks, channels

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        size = tuple(sample["image"].shape[-2:])
        targets, labelled = {}, {}
        for task in self.tasks:
            own = sample["labelled"].get(task, False) and task in sample["targets"]
            target = sample["targets"][task] if task in sample["targets"] else None
            if target is None:
                target = _empty_target(task, size, self.channels[task])
            if task == "detection":
                padding = torch.full((_DETECTION_ROWS - len(target), 5), -1.0)
                target = torch.cat([target.float(), padding])
            targets[task], labelled[task] = target, bool(own)
        return {"image": sample["image"], "targets": targets, "labelled": labelled}


def _empty_target(task: str, size: tuple[int, ...], channels: int) -> torch.Tensor:
    if task == "detection":
        return torch.full((0, 5), -1.0)
    if task in ("semseg", "human_parts"):
        return torch.full(size, IGNORE_INDEX, dtype=torch.int64)
    shape = (3 if task == "normals" else 1, *size)
    return torch.full(shape, _NO_LABEL.get(task, IGNORE_INDEX), dtype=torch.float32)


def _part_dataset(
    part: PartSpec,
    dataset: DatasetSpec,
    split: str,
    seed: int,
    k: int,
    tasks: tuple[str, ...],
    augmentation: torch.Generator | None,
) -> Dataset:
    own = tuple(t for t in part.tasks if t in tasks)
    if part.name == "synthetic":
        samples = part.train_samples if split == "train" else part.val_samples
        assert samples is not None
        return _scenes(dataset, split, _part_seed(seed, k), own, samples)
    assert part.root is not None
    return open_dataset(part.name, Path(part.root), split, own, dataset.image_size, augmentation)


def _disk_mix(
    dataset: DatasetSpec, seed: int, tasks: tuple[str, ...], workers: int
) -> tuple[Split, Split]:
    # Scored at image_size: the parts' own resolutions differ, and a batch mixes them.
    assert dataset.parts is not None
    channels = {t: get_task(t, dataset.num_classes).channels for t in tasks}
    augmentation = torch.Generator().manual_seed(seed)
    splits = []
    for split, generator in (("train", augmentation), ("val", None)):
        parts = [
            _PartOfMix(_part_dataset(p, dataset, split, seed, k, tasks, generator), tasks, channels)
            for k, p in enumerate(dataset.parts)
        ]
        ids = torch.cat([torch.full((len(p),), k) for k, p in enumerate(parts)])
        balanced = dataset.sampler == "balanced"
        splits.append(DiskSplit(ConcatDataset(parts), generator, ids, balanced, workers, seed))
    return splits[0], splits[1]


def trial_splits(
    dataset: DatasetSpec, seed: int, tasks: tuple[str, ...], workers: int = 0
) -> tuple[Split, Split]:
    """The training and validation splits of a trial's dataset, for ``tasks``; a dataset
    on disk decoded by ``workers`` processes (0: in this one)."""
    if dataset.parts is not None and any(p.name != "synthetic" for p in dataset.parts):
        return _disk_mix(dataset, seed, tasks, workers)
    if dataset.name == "synthetic":
        return _rendered(dataset, "train", seed, tasks), _rendered(dataset, "val", seed, tasks)
    assert dataset.root is not None
    root = Path(dataset.root)
    augmentation = torch.Generator().manual_seed(seed)
    train = open_dataset(dataset.name, root, "train", tasks, dataset.image_size, augmentation)
    native = dataset.eval_resolution == "native"
    val = open_dataset(dataset.name, root, "val", tasks, dataset.image_size, native=native)
    return DiskSplit(train, augmentation, workers=workers, seed=seed), DiskSplit(
        val, workers=workers, seed=seed
    )


@functools.lru_cache(maxsize=2)
def _neighbour_images(dataset: DatasetSpec, seed: int) -> torch.Tensor:
    scenes = _scenes(dataset, "train", seed, (), dataset.train_samples)
    return torch.stack([scenes.neighbour(i) for i in range(len(scenes))])


def train_with_neighbours(
    dataset: DatasetSpec, seed: int, tasks: tuple[str, ...], workers: int = 0
) -> Split:
    """The training split of :func:`trial_splits`, its batches with each image's
    neighbouring frame (:data:`FrameBatch`)."""
    missing = missing_neighbours(dataset)
    if missing is not None:
        raise DatasetError(missing)
    if dataset.name == "synthetic":
        split = _rendered(dataset, "train", seed, tasks)
        return replace(split, neighbours=_neighbour_images(dataset, seed))
    augmentation = torch.Generator().manual_seed(seed)
    root = Path(str(dataset.root))
    train = open_dataset(
        dataset.name, root, "train", tasks, dataset.image_size, augmentation, neighbours=True
    )
    return DiskSplit(train, augmentation, workers=workers, seed=seed)


def worker_batches(
    split: Split,
    batch_size: int,
    seed: int | None,
    rank: int = 0,
    world: int = 1,
    drop_last: bool = False,
) -> Iterator[Batch | FrameBatch]:
    """Worker ``rank``'s part (``batch_size`` samples) of each global batch of ``world``
    data-parallel workers. With ``drop_last`` a last global batch too small for every
    worker is dropped: each worker must take each training step."""
    if world == 1:
        yield from split.batches(batch_size, seed)
        return
    if isinstance(split, DiskSplit):  # each worker decodes its own share alone
        yield from split.batches(batch_size, seed, rank, world, drop_last)
        return
    for images, targets, labelled, *frames in split.batches(batch_size * world, seed):
        if drop_last and images.shape[0] < batch_size * world:
            return
        part = slice(rank * batch_size, (rank + 1) * batch_size)
        yield (
            images[part],
            {t: v[part] for t, v in targets.items()},
            {t: v[part] for t, v in labelled.items()},
            *(f[part] for f in frames),
        )


def to_device(batch: Batch | FrameBatch, device: torch.device) -> Batch | FrameBatch:
    """A batch's images, targets (boxes included), labelled masks and neighbouring frames
    on ``device``; copies from pinned memory overlap with compute."""

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True)

    images, targets, labelled, *frames = batch
    moved = (
        move(images),
        {k: move(v) for k, v in targets.items()},
        {k: move(v) for k, v in labelled.items()},
        *(move(f) for f in frames),
    )
    return moved  # type: ignore[return-value]
