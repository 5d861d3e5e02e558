"""A trial's training and validation data, batch by batch.

Synthetic scenes are rendered once per process and held as tensors; datasets on disk
are read through a loader, with the papers' augmentation on the training split.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset

from study.data import SyntheticScenes
from study.data.formats import open_dataset
from study.spec import DatasetSpec

__all__ = ["Batch", "DiskSplit", "Split", "TensorSplit", "trial_splits"]

#: Images, targets, and per task a bool (B,) of the samples labelled for it.
Batch = tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]


class Split(Protocol):
    def __len__(self) -> int: ...

    def batches(self, batch_size: int, seed: int | None) -> Iterator[Batch]:
        """Batches in an order drawn from ``seed`` (file order when None)."""
        ...


def _order(length: int, seed: int | None) -> torch.Tensor:
    if seed is None:
        return torch.arange(length)
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.images.shape[0]

    def batches(self, batch_size: int, seed: int | None) -> Iterator[Batch]:
        for index in _order(len(self), seed).split(batch_size):
            labelled = {t: torch.ones(len(index), dtype=torch.bool) for t in self.targets}
            yield self.images[index], {t: v[index] for t, v in self.targets.items()}, labelled


@dataclass(frozen=True)
class DiskSplit:
    dataset: Dataset
    # The augmentation draws from here, reseeded each epoch so a resumed trial replays it.
    augmentation: torch.Generator | None = field(default=None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self, batch_size: int, seed: int | None) -> Iterator[Batch]:
        if self.augmentation is not None and seed is not None:
            self.augmentation.manual_seed(seed)
        order = _order(len(self), seed).tolist()
        loader = DataLoader(self.dataset, batch_size=batch_size, sampler=order)
        for batch in loader:
            yield batch["image"], batch["targets"], batch["labelled"]


@functools.lru_cache(maxsize=4)
def _rendered(dataset: DatasetSpec, split: str, seed: int, tasks: tuple[str, ...]) -> TensorSplit:
    # Cached per process, so trials in a reused actor do not render the scenes again.
    samples = dataset.train_samples if split == "train" else dataset.val_samples
    scenes = SyntheticScenes(
        samples,
        tasks,
        split=split,
        image_size=dataset.image_size,
        num_classes=dataset.num_classes,
        max_objects=dataset.max_objects,
        seed=seed,
    )
    items = [scenes[i] for i in range(len(scenes))]
    return TensorSplit(
        torch.stack([item["image"] for item in items]),
        {t: torch.stack([item["targets"][t] for item in items]) for t in tasks},
    )


def trial_splits(dataset: DatasetSpec, seed: int, tasks: tuple[str, ...]) -> tuple[Split, Split]:
    """The training and validation splits of a trial's dataset, for ``tasks``."""
    if dataset.name == "synthetic":
        return _rendered(dataset, "train", seed, tasks), _rendered(dataset, "val", seed, tasks)
    assert dataset.root is not None
    root = Path(dataset.root)
    augmentation = torch.Generator().manual_seed(seed)
    train = open_dataset(dataset.name, root, "train", tasks, dataset.image_size, augmentation)
    val = open_dataset(dataset.name, root, "val", tasks, dataset.image_size)
    return DiskSplit(train, augmentation), DiskSplit(val)
