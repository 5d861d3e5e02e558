"""The registry of on-disk dataset formats, as :mod:`models` registers architectures.

A format is one record: the tasks it labels, its number of semantic classes, and the
three functions the platform needs of it (read a split, count a folder's samples, write
synthetic scenes in its layout). Synthetic scenes are rendered, not read, and are not a
format.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from study.data._files import DatasetError
from study.data._sample import Sample
from study.data._synthetic import Scene

__all__ = ["SYNTHETIC", "DatasetFormat", "dataset_names", "get_format", "register_dataset"]

#: The name of the rendered dataset, beside the registered formats.
SYNTHETIC = "synthetic"

#: ``(root, split, tasks, transform=..., [neighbours=True])`` → a split's samples.
Reader = Callable[..., Dataset]
#: ``(out, {split: [(id, scene)]}, [neighbours={id: scene}])`` → files in the layout.
Writer = Callable[..., None]


@dataclass(frozen=True)
class DatasetFormat:
    """An on-disk dataset layout and how the platform reads, checks and writes it."""

    name: str
    tasks: tuple[str, ...]
    num_classes: int
    read: Reader
    describe: Callable[[Path], dict[str, dict[str, int]]]
    write: Writer
    #: Whether it stores each image's neighbouring video frame (``neighbours=True``).
    neighbours: bool = False
    #: (height, width) its images are padded to for evaluation at their own resolution,
    #: as the papers score it; ``None``: evaluated as stored (every image one size).
    eval_size: tuple[int, int] | None = None

    def open(
        self,
        root: Path,
        split: str,
        tasks: Sequence[str],
        transform: Callable[[Sample], Sample],
        neighbours: bool = False,
    ) -> Dataset:
        self.check_neighbours(neighbours)
        extra = {"neighbours": True} if neighbours else {}
        return self.read(root, split, tasks, transform=transform, **extra)

    def write_scenes(
        self,
        out: Path,
        splits: Mapping[str, Sequence[tuple[str, Scene]]],
        neighbours: Mapping[str, Scene] | None = None,
    ) -> None:
        self.check_neighbours(neighbours is not None)
        self.write(out, splits, **({"neighbours": neighbours} if neighbours else {}))

    def check_neighbours(self, asked: bool) -> None:
        """Refuse neighbouring frames from a format that does not store them."""
        if asked and not self.neighbours:
            having = [f.name for f in _FORMATS.values() if f.neighbours]
            raise DatasetError(
                f"{self.name} has no neighbouring frames; only {', '.join(having)} stores them"
            )


_FORMATS: dict[str, DatasetFormat] = {}


def register_dataset(fmt: DatasetFormat) -> DatasetFormat:
    """Make ``fmt`` available by its name to specs, loaders and ``mtlstudy data``."""
    if fmt.name in _FORMATS or fmt.name == SYNTHETIC:
        raise ValueError(f"dataset format {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def dataset_names(synthetic: bool = True) -> tuple[str, ...]:
    """Every dataset a spec may name: ``synthetic`` first, then the registered formats."""
    return (*((SYNTHETIC,) if synthetic else ()), *_FORMATS)


def get_format(name: str) -> DatasetFormat:
    """The registered format ``name``; an unknown name is one line naming the choices."""
    try:
        return _FORMATS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_FORMATS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DatasetError(
            f"unknown dataset format {name!r}; expected one of {', '.join(_FORMATS)}{hint}"
        ) from None
