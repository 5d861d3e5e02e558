"""Writing scenes in the real NYUD-MT layouts (:mod:`study.data.nyud` reads them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.io
from PIL import Image

from study.data._files import DatasetError
from study.data._synthetic import Scene
from study.data.nyud import (
    _FOLDERS,
    _IMAGE_DIR,
    _SPLIT_DIR,
    IGNORE,
    LAYOUTS,
    NEIGHBOUR_DIR,
    NUM_CLASSES,
    Layout,
    _task_path,
)

__all__ = ["write_nyud"]


def _to_uint8(array: np.ndarray) -> np.ndarray:
    return np.clip(np.round(array * 255.0), 0, 255).astype(np.uint8)


def _stored_labels(semseg: np.ndarray, name: str) -> np.ndarray:
    """Synthetic class c (0 = background) as stored value c + 1; 255 (ignore) as 0."""
    semseg = np.asarray(semseg, dtype=np.int64)
    ignore = semseg == IGNORE
    classes = semseg[~ignore]
    if classes.size and (classes.min() < 0 or classes.max() >= NUM_CLASSES):
        raise DatasetError(
            f"scene {name!r} has classes up to {classes.max()}; NYUD stores classes "
            f"0..{NUM_CLASSES - 1}"
        )
    return np.where(ignore, 0, semseg + 1).astype(np.uint8)


def write_nyud(
    out: Path,
    split_scenes: Mapping[str, Sequence[tuple[str, Scene]]],
    layout: Literal["survey", "astmt"] = "survey",
    neighbours: Mapping[str, Scene] | None = None,
) -> None:
    """Write ``(id, scene)`` pairs per split into ``out`` in the real NYUD ``layout``, and
    the image of each ``neighbours[id]`` (a neighbouring frame) as ``neighbours/<id>.jpg``.

    The synthetic class c is stored as c + 1, so the stored 0 keeps meaning "unlabelled".
    Images are JPEG quality 95; ASTMT normals are JPEG quality 100 without chroma
    subsampling, which keeps them within about 0.02 of the scene's unit vectors.
    """
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown NYUD layout {layout!r}; expected one of {LAYOUTS}")
    out = Path(out)
    for folder in (_IMAGE_DIR, _SPLIT_DIR, *_FOLDERS.values()):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for split, scenes in split_scenes.items():
        for name, scene in scenes:
            _write_scene(out, layout, name, scene)
        lines = "".join(f"{name}\n" for name, _ in scenes)
        (out / _SPLIT_DIR / f"{split}.txt").write_text(lines)
    if neighbours is not None:
        (out / NEIGHBOUR_DIR).mkdir(exist_ok=True)
        for name, scene in neighbours.items():
            path = out / NEIGHBOUR_DIR / f"{name}.jpg"
            Image.fromarray(_to_uint8(scene.image)).save(path, quality=95)


def _write_scene(out: Path, layout: Layout, name: str, scene: Scene) -> None:
    def path(task: str) -> Path:
        return _task_path(out, layout, task, name)

    Image.fromarray(_to_uint8(scene.image)).save(out / _IMAGE_DIR / f"{name}.jpg", quality=95)
    labels = _stored_labels(scene.semseg, name)
    depth = np.asarray(scene.depth, dtype=np.float32)
    normals = np.asarray(scene.normals, dtype=np.float32).transpose(1, 2, 0)  # H, W, 3
    edges = (np.asarray(scene.edges) > 0).astype(np.uint8)
    if layout == "survey":
        Image.fromarray(labels).save(path("semseg"))
        np.save(path("depth"), depth)
        np.save(path("normals"), np.ascontiguousarray(normals))
        np.save(path("edges"), edges.astype(np.float32))
        return
    mats: dict[str, dict[str, Any]] = {
        "semseg": {"segmentation": labels},
        "depth": {"depth": depth},
    }
    for task, contents in mats.items():
        scipy.io.savemat(path(task), contents)
    raw = _to_uint8((normals + 1.0) / 2.0)
    # Normals are geometry, not a photo: least-lossy JPEG (no chroma subsampling).
    Image.fromarray(raw).save(path("normals"), quality=100, subsampling=0)
    Image.fromarray(edges * 255).save(path("edges"))
