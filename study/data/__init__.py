"""Datasets for trials: synthetic scenes rendered from a seed, and the real benchmark layouts."""

from study.data._common import DatasetError, Sample
from study.data._synthetic import SYNTHETIC_TASKS, Scene, SyntheticScenes, render_scene

__all__ = ["SYNTHETIC_TASKS", "DatasetError", "Sample", "Scene", "SyntheticScenes", "render_scene"]
