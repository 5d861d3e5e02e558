"""Datasets for trials: synthetic multi-task scenes rendered from a seed."""

from study.data._synthetic import Scene, SyntheticScenes, render_scene

__all__ = ["Scene", "SyntheticScenes", "render_scene"]
