"""The spec's dataset: synthetic scenes, a registered on-disk format, or a mix of parts."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from study.data import SYNTHETIC, SYNTHETIC_TASKS, get_format
from study.spec._base import (
    MAX_SAMPLES,
    DatasetName,
    PathText,
    _Strict,
)


class PartSpec(_Strict):
    """One part of a partially labelled mix: its own images, some tasks labelled.

    A synthetic part renders ``train_samples`` and ``val_samples`` scenes of its own; a part
    on disk (a registered format with a ``root``) reads that folder's splits.
    """

    name: DatasetName = Field(
        SYNTHETIC, description="`synthetic`, or a registered format on disk such as `voc`"
    )
    root: PathText | None = Field(
        None, description="a part on disk: its folder, relative to the spec's folder"
    )
    tasks: tuple[str, ...] = Field(
        min_length=1, max_length=32, description="the tasks this part labels"
    )
    train_samples: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="a synthetic part: the training scenes it renders"
    )
    val_samples: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="a synthetic part: the validation scenes it renders"
    )

    @model_validator(mode="after")
    def _labels_its_tasks(self) -> PartSpec:
        if self.name == SYNTHETIC:
            if self.root is not None or self.train_samples is None or self.val_samples is None:
                raise ValueError("a synthetic part has train_samples and val_samples, no root")
            labelled = SYNTHETIC_TASKS
        else:
            if self.root is None:
                raise ValueError(f"a {self.name} part needs 'root', the dataset's folder")
            labelled = get_format(self.name).tasks
        unknown = [t for t in self.tasks if t not in labelled]
        if unknown:
            raise ValueError(f"{self.name} does not label {unknown}")
        return self


class DatasetSpec(_Strict):
    """The images a study trains on: synthetic scenes, a registered format on disk
    (``nyud``, ``pascal``) or a mix of partially labelled parts."""

    name: DatasetName = Field(
        SYNTHETIC,
        description="`synthetic` or a registered format on disk (`nyud`, `pascal`, with `root`)",
    )
    root: PathText | None = Field(
        None, description="the dataset's folder (a format on disk), relative to the spec's folder"
    )
    image_size: int = Field(
        64,
        ge=16,
        le=1024,
        description="pixels a side; on disk the training crop (and the "
        "evaluation size with `eval_resolution: train`)",
    )
    num_classes: int = Field(
        5, ge=2, le=256, description="segmentation and detection classes (nyud 40, pascal 21)"
    )
    train_samples: int = Field(256, ge=1, le=MAX_SAMPLES, description="synthetic training scenes")
    val_samples: int = Field(64, ge=1, le=MAX_SAMPLES, description="synthetic validation scenes")
    max_objects: int = Field(4, ge=1, le=32, description="synthetic: most objects in a scene")
    parts: tuple[PartSpec, ...] | None = Field(
        None,
        max_length=64,
        description="a mix of partially labelled parts (with `name` left `synthetic`); "
        "their sample counts replace `train_samples` and `val_samples`",
    )
    sampler: Literal["shuffled", "balanced"] = Field(
        "shuffled",
        description="`balanced` draws every batch equally from each part; `shuffled` ignores parts",
    )
    eval_resolution: Literal["native", "train"] = Field(
        "native",
        description="on disk: `native` scores validation at the images' own resolution, as "
        "the papers (nyud as stored, pascal and voc padded to 512×512, padding unscored); "
        "`train` resizes them to `image_size`, as a mix of parts always is; `vit_sharing` "
        "needs `train` unless its `image_size` is the native size",
    )

    @model_validator(mode="after")
    def _real_dataset(self) -> DatasetSpec:
        if self.name == SYNTHETIC:
            if self.root is not None:
                raise ValueError("a synthetic dataset has no root")
            for part in self.parts or ():
                classes = part.name != SYNTHETIC and get_format(part.name).num_classes
                counted = {"semseg", "detection"} & set(part.tasks)
                if classes and counted and classes != self.num_classes:
                    raise ValueError(
                        f"the {part.name} part's {sorted(counted)} have {classes} classes; "
                        f"set num_classes: {classes}"
                    )
            return self
        if self.parts is not None:
            raise ValueError("a mix of parts takes no name: each part names its dataset")
        if self.root is None:
            raise ValueError(f"{self.name} needs 'root', the dataset's folder")
        classes = get_format(self.name).num_classes
        if self.num_classes != classes:
            raise ValueError(f"{self.name} has {classes} classes; set num_classes: {classes}")
        return self

    def tasks(self) -> tuple[str, ...]:
        """The tasks this dataset labels (in some of its samples, for a mix)."""
        if self.parts is not None:
            return tuple(dict.fromkeys(t for part in self.parts for t in part.tasks))
        return SYNTHETIC_TASKS if self.name == SYNTHETIC else get_format(self.name).tasks
