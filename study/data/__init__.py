"""Datasets for trials: synthetic scenes rendered from a seed, and the real benchmark
layouts, each a registered :class:`DatasetFormat` (``dataset_names()`` lists them)."""

from study.data._files import DatasetError
from study.data._formats import IMAGE_MEAN, IMAGE_STD, describe_dataset, open_dataset, synthesize
from study.data._registry import (
    SYNTHETIC,
    DatasetFormat,
    dataset_names,
    get_format,
    register_dataset,
)
from study.data._sample import Sample
from study.data._synthetic import SYNTHETIC_TASKS, Scene, SyntheticScenes, render_scene

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "SYNTHETIC",
    "SYNTHETIC_TASKS",
    "DatasetError",
    "DatasetFormat",
    "Sample",
    "Scene",
    "SyntheticScenes",
    "dataset_names",
    "describe_dataset",
    "get_format",
    "open_dataset",
    "register_dataset",
    "render_scene",
    "synthesize",
]
