"""A dataset on disk, batch by batch: one DataLoader per split, its worker processes kept
across epochs.

What a batch holds depends only on the seed it is asked with, never on how many processes
decode it: the sampler, in the trial's process, deals ``(seed, index)`` keys, and each
sample's augmentation is drawn from a generator seeded by its own key, in whichever
process reads it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from study.data import DatasetError
from study.errors import UserError
from study.run._engine import trial_device

__all__ = ["DiskSplit", "sample_seed", "seeded_order"]

#: A sample's key: the seed of the pass that asks for it (None: no augmentation), its index.
Key = tuple[int | None, int]


def seeded_order(length: int, seed: int | None, parts: torch.Tensor | None = None) -> torch.Tensor:
    """The indices in an order drawn from ``seed`` (file order when None); with ``parts``
    each part shuffled, then dealt in turn, so every batch draws evenly from all parts."""
    if seed is None:
        return torch.arange(length)
    generator = torch.Generator().manual_seed(seed)
    if parts is None:
        return torch.randperm(length, generator=generator)
    members = [torch.nonzero(parts == p).flatten() for p in range(int(parts.max()) + 1)]
    queues = [m[torch.randperm(len(m), generator=generator)].tolist() for m in members]
    return torch.tensor([q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)])


def sample_seed(seed: int, index: int) -> int:
    """The seed of one sample's augmentation in the pass drawn from ``seed``."""
    # splitmix64's constants: neighbouring (seed, index) pairs get unrelated seeds.
    mixed = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) % 2**64
    return (mixed ^ (mixed >> 31)) % 2**63


class _Relayed(Exception):
    """A user's error raised in a loader process; its message is the last line PyTorch
    relays of it."""


def _relayed(err: UserError) -> Exception:
    # In the trial's own process the error goes up as it is.
    return err if get_worker_info() is None else _Relayed(f"|{err}")


class _Keyed(Dataset):
    """``dataset[(seed, index)]``: the sample at ``index``, augmented from that key alone."""

    def __init__(self, dataset: Dataset, augmentation: torch.Generator | None) -> None:
        self.dataset, self.augmentation = dataset, augmentation

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Key) -> Any:
        seed, index = key
        if self.augmentation is not None and seed is not None:
            self.augmentation.manual_seed(sample_seed(seed, index))
        try:
            return self.dataset[index]
        except UserError as err:
            raise _relayed(err) from None


class _PassSampler(Sampler[list[Key]]):
    """The batches of keys of one pass, set before each pass as ``set_epoch`` would:
    this worker's share of each global batch of ``world`` workers."""

    def __init__(self, length: int, parts: torch.Tensor | None) -> None:
        self.length, self.parts = length, parts
        self.batch_size, self.seed, self.rank, self.world, self.drop_last = 1, None, 0, 1, False

    def set_pass(
        self, batch_size: int, seed: int | None, rank: int, world: int, drop_last: bool
    ) -> None:
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world, self.drop_last = rank, world, drop_last

    def _batches(self) -> list[list[Key]]:
        order = seeded_order(self.length, self.seed, self.parts).tolist()
        step = self.batch_size * self.world
        out = []
        for start in range(0, len(order), step):
            batch = order[start : start + step]
            if self.drop_last and len(batch) < step:
                break
            mine = batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
            if mine:  # the last global batch may leave a worker nothing to evaluate
                out.append([(self.seed, i) for i in mine])
        return out

    def __iter__(self) -> Iterator[list[Key]]:
        # Drawn now, not lazily: a later pass re-sets the sampler before this one is read.
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


def _collate(samples: Sequence[dict]) -> dict:
    first = samples[0]["image"].shape
    for sample in samples[1:]:
        if sample["image"].shape != first:
            raise _relayed(
                DatasetError(
                    f"images {samples[0].get('name')!r} ({tuple(first[-2:])}) and "
                    f"{sample.get('name')!r} ({tuple(sample['image'].shape[-2:])}) differ in "
                    "size, so they cannot share a batch at their own resolution; expected one "
                    "size, or set dataset.eval_resolution: train"
                )
            )
    return default_collate(samples)


def _seed_worker(worker: int) -> None:
    # torch seeds each loader process from the loader's generator; numpy and random follow.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class DiskSplit:
    """A dataset on disk read by ``workers`` processes (0: in the trial's process), the
    papers' augmentation drawn per sample from ``augmentation``'s seed and the pass's."""

    def __init__(
        self,
        dataset: Dataset,
        augmentation: torch.Generator | None = None,
        parts: torch.Tensor | None = None,
        balanced: bool = False,
        workers: int = 0,
        seed: int = 0,
    ) -> None:
        self.dataset, self.augmentation, self.workers = dataset, augmentation, workers
        self.parts, self.balanced, self.seed = parts, balanced, seed
        self._sampler = _PassSampler(len(self), parts if balanced else None)
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _built(self) -> DataLoader:
        if self._loader is None:
            workers = self.workers > 0
            self._loader = DataLoader(
                _Keyed(self.dataset, self.augmentation),
                batch_sampler=self._sampler,
                num_workers=self.workers,
                collate_fn=_collate,
                # Pinned pages let to_device's non_blocking copies overlap with compute.
                pin_memory=trial_device().type == "cuda",
                persistent_workers=workers,
                worker_init_fn=_seed_worker if workers else None,
                generator=torch.Generator().manual_seed(self.seed),
            )
        return self._loader

    def batches(
        self,
        batch_size: int,
        seed: int | None,
        rank: int = 0,
        world: int = 1,
        drop_last: bool = False,
    ) -> Iterator[Any]:
        """Batches in an order drawn from ``seed`` (file order when None); worker
        ``rank``'s ``batch_size`` samples of each global batch of ``world`` workers."""
        loader = self._built()
        self._sampler.set_pass(batch_size, seed, rank, world, drop_last)
        try:
            for batch in loader:
                if "neighbour" in batch:  # a loader asked for neighbouring frames
                    yield batch["image"], batch["targets"], batch["labelled"], batch["neighbour"]
                else:
                    yield batch["image"], batch["targets"], batch["labelled"]
        except _Relayed as err:
            # PyTorch relays the worker's traceback; its last line holds the message.
            message = str(err).strip().splitlines()[-1].partition("|")[2]
            raise DatasetError(message) from None
