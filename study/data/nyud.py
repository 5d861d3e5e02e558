"""NYUD-MT (NYU Depth v2, 795 train / 654 val): semseg (40 classes), depth, normals, edges.

Two on-disk layouts are read, both with one id per line in ``gt_sets/{split}.txt``:

- ``survey`` (Vandenhende et al., multi-task survey; images 480×640):
  ``images/<id>.jpg``; ``segmentation/<id>.png`` (0 = unlabelled, k = class k - 1);
  ``depth/<id>.npy`` metres, valid in [0.001, 10]; ``normals/<id>.npy`` unit vectors,
  H×W×3 or 3×H×W, all-zero = invalid; ``edge/<id>.npy`` H×W in {0, 1}.
- ``astmt`` (Maninis et al. ASTMT, Kanakis et al. RCM; images 425×560):
  ``images/<id>.jpg``; ``segmentation/<id>.mat`` key ``segmentation`` (0 = unlabelled);
  ``depth/<id>.mat`` key ``depth`` (0 = invalid); ``normals/<id>.jpg`` decoded as
  ``2 x / 255 - 1`` (raw all-zero = invalid); ``edge/<id>.png`` (> 0 is an edge).
  The ASTMT loader (``fblib/dataloaders/nyud.py``) reads its splits from the same
  ``gt_sets/{train,val}.txt`` files.

Either layout may add ``neighbours/<id>.jpg``: a neighbouring frame of the same video as
``images/<id>.jpg`` (NYU Depth v2 ships the raw video its labelled frames come from), of
the same size, for the temporal delta penalty of ``vit_sharing``.  It is read only when
asked for (``NYUD(..., neighbours=True)``); a sample then carries it as ``neighbour``.

Targets follow :mod:`models.tasks`: semseg int64 (H, W) with 255 ignored, depth float32
(1, H, W) with 0 invalid, normals float32 (3, H, W) with all-zero invalid, edges float32
(1, H, W) in {0, 1}.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import Dataset

from study.data._files import DatasetError, read_rgb, read_split, require_dir
from study.data._sample import Sample

__all__ = [
    "LAYOUTS",
    "NUM_CLASSES",
    "NYUD",
    "TASKS",
    "NEIGHBOUR_DIR",
    "Layout",
    "describe",
    "detect_layout",
]

NUM_CLASSES = 40
TASKS = ("semseg", "depth", "normals", "edges")

Layout = Literal["survey", "astmt"]
LAYOUTS: tuple[Layout, ...] = ("survey", "astmt")

IGNORE = 255
DEPTH_RANGE = (0.001, 10.0)  # metres; survey depth outside it is invalid

_IMAGE_DIR = "images"
_SPLIT_DIR = "gt_sets"
#: Optional: each image's neighbouring video frame, under the image's id.
NEIGHBOUR_DIR = "neighbours"
# Per task: its folder and the file suffix in each layout.
_FOLDERS = {"semseg": "segmentation", "depth": "depth", "normals": "normals", "edges": "edge"}
_SUFFIXES: dict[Layout, dict[str, str]] = {
    "survey": {"semseg": ".png", "depth": ".npy", "normals": ".npy", "edges": ".npy"},
    "astmt": {"semseg": ".mat", "depth": ".mat", "normals": ".jpg", "edges": ".png"},
}


def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str):
        raise DatasetError(f"tasks must be a sequence of task names, got the string {tasks!r}")
    for task in tasks:
        if task not in TASKS:
            raise DatasetError(f"unknown NYUD task {task!r}; expected some of {list(TASKS)}")
    return tuple(dict.fromkeys(tasks))


def _has_suffix(folder: Path, suffix: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.endswith(suffix) for entry in entries)
    except OSError:
        return False


def detect_layout(root: Path) -> Layout:
    """The layout of ``root`` from the file suffixes in its task folders."""
    found: dict[Layout, list[str]] = {"survey": [], "astmt": []}
    for task, folder in _FOLDERS.items():
        path = root / folder
        if not path.is_dir():
            continue
        for layout in LAYOUTS:
            if _has_suffix(path, _SUFFIXES[layout][task]):
                found[layout].append(f"{folder}/*{_SUFFIXES[layout][task]}")
    if found["survey"] and found["astmt"]:
        raise DatasetError(
            f"cannot tell the layout of NYUD root {root}: it has survey files "
            f"({', '.join(found['survey'])}) and ASTMT files ({', '.join(found['astmt'])}); "
            "pass layout='survey' or layout='astmt'"
        )
    for layout in LAYOUTS:
        if found[layout]:
            return layout
    raise DatasetError(
        f"cannot tell the layout of NYUD root {root}: no task files found "
        "(expected depth/*.npy for the survey layout or depth/*.mat for ASTMT)"
    )


def _resolve_layout(root: Path, layout: str) -> Layout:
    if layout == "auto":
        return detect_layout(root)
    if layout not in LAYOUTS:
        raise DatasetError(f"unknown NYUD layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
    return layout  # type: ignore[return-value]


def _task_path(root: Path, layout: Layout, task: str, name: str) -> Path:
    return root / _FOLDERS[task] / f"{name}{_SUFFIXES[layout][task]}"


# --- readers ------------------------------------------------------------------------------


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"file {path} not found") from None
    except Exception as err:  # numpy raises several types for a corrupt file
        raise DatasetError(f"file {path} cannot be read as .npy: {err}") from None
    if not isinstance(array, np.ndarray):
        raise DatasetError(f"file {path} holds no single array")
    return array


def _load_mat(path: Path, key: str) -> np.ndarray:
    try:
        contents = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DatasetError(f"file {path} not found") from None
    except Exception as err:  # scipy raises several types for a corrupt file
        raise DatasetError(f"file {path} cannot be read as .mat: {err}") from None
    if key not in contents:
        keys = sorted(k for k in contents if not k.startswith("__"))
        raise DatasetError(f"file {path} has no key {key!r}; it has {keys}")
    return np.asarray(contents[key])


def _load_image_array(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image)
    except FileNotFoundError:
        raise DatasetError(f"file {path} not found") from None
    except Exception as err:
        raise DatasetError(f"file {path} cannot be read as an image: {err}") from None


def _plane(array: np.ndarray, path: Path, size: tuple[int, int]) -> np.ndarray:
    """``array`` as (H, W), allowing one singleton channel axis at either end."""
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape != size:
        raise DatasetError(f"file {path} has shape {array.shape}; expected {size} like its image")
    return array


def _semseg(raw: np.ndarray, path: Path, size: tuple[int, int]) -> torch.Tensor:
    raw = _plane(raw, path, size)
    if path.suffix == ".png" and raw.dtype != np.uint8:
        # A 16-bit or float PNG is not a label map of 40 classes, whatever its values.
        raise DatasetError(f"file {path} holds {raw.dtype} pixels; expected an 8-bit label png")
    if not np.issubdtype(raw.dtype, np.number) or np.issubdtype(raw.dtype, np.complexfloating):
        raise DatasetError(f"file {path} has non-numeric labels ({raw.dtype})")
    values = raw.astype(np.float64)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DatasetError(f"file {path} has non-integer labels")
    if values.size and (values.min() < 0 or values.max() > NUM_CLASSES):
        raise DatasetError(
            f"file {path} has labels in [{values.min():g}, {values.max():g}]; "
            f"expected 0 (unlabelled) to {NUM_CLASSES}"
        )
    labels = values.astype(np.int64) - 1
    labels[labels < 0] = IGNORE
    return torch.from_numpy(labels)


def _float_plane(raw: np.ndarray, path: Path, size: tuple[int, int]) -> np.ndarray:
    raw = _plane(raw, path, size)
    kinds = (np.bool_, np.integer, np.floating)
    if not any(np.issubdtype(raw.dtype, kind) for kind in kinds):
        raise DatasetError(f"file {path} has non-numeric values ({raw.dtype})")
    return raw.astype(np.float32)


def _depth(raw: np.ndarray, path: Path, size: tuple[int, int], layout: Layout) -> torch.Tensor:
    depth = _float_plane(raw, path, size)
    if not np.isfinite(depth).all():
        raise DatasetError(f"file {path} has NaN or infinite depth; expected metres, 0 = invalid")
    valid = depth > 0
    if layout == "survey":
        valid &= (depth >= DEPTH_RANGE[0]) & (depth <= DEPTH_RANGE[1])
    depth = np.where(valid, depth, np.float32(0.0)).astype(np.float32)
    return torch.from_numpy(depth[None].copy())


def _survey_normals(raw: np.ndarray, path: Path, size: tuple[int, int]) -> torch.Tensor:
    if raw.shape == (*size, 3):
        normals = raw.transpose(2, 0, 1)
    elif raw.shape == (3, *size):
        normals = raw
    else:
        raise DatasetError(
            f"file {path} has shape {raw.shape}; expected {(*size, 3)} or {(3, *size)}"
        )
    if not np.issubdtype(normals.dtype, np.floating):
        raise DatasetError(f"file {path} has {normals.dtype} normals; expected floats")
    normals = normals.astype(np.float32)
    if not np.isfinite(normals).all():
        raise DatasetError(f"file {path} has NaN or infinite normals; expected all-zero = invalid")
    return torch.from_numpy(np.ascontiguousarray(normals))


def _astmt_normals(raw: np.ndarray, path: Path, size: tuple[int, int]) -> torch.Tensor:
    if raw.shape != (*size, 3):
        raise DatasetError(f"file {path} has shape {raw.shape}; expected {(*size, 3)} (RGB)")
    invalid = (raw == 0).all(axis=2)
    normals = 2.0 * raw.astype(np.float64) / 255.0 - 1.0
    norm = np.linalg.norm(normals, axis=2, keepdims=True)
    invalid |= norm[..., 0] < 1e-6
    normals = normals / np.maximum(norm, 1e-6)
    normals[invalid] = 0.0
    return torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1), dtype=np.float32))


def _edges(raw: np.ndarray, path: Path, size: tuple[int, int]) -> torch.Tensor:
    edges = _float_plane(raw, path, size)
    if not np.isfinite(edges).all():
        raise DatasetError(f"file {path} has NaN or infinite edges; expected 0 or 1")
    return torch.from_numpy((edges > 0).astype(np.float32)[None].copy())


def _read_target(path: Path, task: str, layout: Layout, size: tuple[int, int]) -> torch.Tensor:
    if layout == "survey":
        if task == "semseg":
            return _semseg(_load_image_array(path), path, size)
        raw = _load_npy(path)
        if task == "depth":
            return _depth(raw, path, size, layout)
        if task == "normals":
            return _survey_normals(raw, path, size)
        return _edges(raw, path, size)
    if task == "semseg":
        return _semseg(_load_mat(path, "segmentation"), path, size)
    if task == "depth":
        return _depth(_load_mat(path, "depth"), path, size, layout)
    if task == "normals":
        return _astmt_normals(_load_image_array(path), path, size)
    return _edges(_load_image_array(path), path, size)


# --- dataset ------------------------------------------------------------------------------


class NYUD(Dataset):
    """NYUD-MT samples of one split, read lazily; folders and files are checked up front."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        tasks: Sequence[str],
        layout: Literal["auto", "survey", "astmt"] = "auto",
        transform: Callable[[Sample], Sample] | None = None,
        neighbours: bool = False,
    ) -> None:
        self.root = Path(root)
        self.tasks = _check_tasks(tasks)
        require_dir(self.root, "NYUD root")
        require_dir(self.root / _IMAGE_DIR, "NYUD images")
        for task in self.tasks:
            require_dir(self.root / _FOLDERS[task], f"NYUD {task}")
        self.neighbours = neighbours
        if neighbours:
            require_dir(self.root / NEIGHBOUR_DIR, "NYUD neighbouring frames")
        self.layout: Layout = _resolve_layout(self.root, layout)
        self.split = split
        self.names = read_split(self.root / _SPLIT_DIR / f"{split}.txt")
        self.transform = transform
        for name in self.names:
            for key, path in self._paths(name).items():
                if not path.is_file():
                    what = "neighbouring frame" if key == "neighbour" else "file"
                    raise DatasetError(f"NYUD {split} sample {name!r}: {what} {path} not found")

    def _paths(self, name: str) -> dict[str, Path]:
        paths = {"image": self.root / _IMAGE_DIR / f"{name}.jpg"}
        for task in self.tasks:
            paths[task] = _task_path(self.root, self.layout, task, name)
        if self.neighbours:
            paths["neighbour"] = self.root / NEIGHBOUR_DIR / f"{name}.jpg"
        return paths

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        paths = self._paths(name)
        image = read_rgb(paths["image"])
        size = (int(image.shape[1]), int(image.shape[2]))
        targets = {task: _read_target(paths[task], task, self.layout, size) for task in self.tasks}
        sample = Sample(
            name=name,
            image=image,
            targets=targets,
            labelled={task: True for task in self.tasks},
        )
        if self.neighbours:
            neighbour = read_rgb(paths["neighbour"])
            if neighbour.shape != image.shape:
                raise DatasetError(
                    f"neighbouring frame {paths['neighbour']} is {tuple(neighbour.shape[1:])}; "
                    f"expected {size} like its image"
                )
            sample["neighbour"] = neighbour
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __repr__(self) -> str:
        return (
            f"NYUD(root={str(self.root)!r}, split={self.split!r}, tasks={list(self.tasks)}, "
            f"layout={self.layout!r}, samples={len(self)}, neighbours={self.neighbours})"
        )


def describe(
    root: str | os.PathLike[str], layout: Literal["auto", "survey", "astmt"] = "auto"
) -> dict[str, dict[str, int]]:
    """Per split in ``gt_sets``: how many listed samples have an image and each task's file
    (and a neighbouring frame, where the root has ``neighbours/``)."""
    root = Path(root)
    require_dir(root, "NYUD root")
    splits_dir = require_dir(root / _SPLIT_DIR, "NYUD splits")
    resolved = _resolve_layout(root, layout)
    split_files = sorted(splits_dir.glob("*.txt"))
    if not split_files:
        raise DatasetError(f"NYUD splits: no .txt split files in {splits_dir}")
    counts: dict[str, dict[str, int]] = {}
    for split_file in split_files:
        names = read_split(split_file)
        row = {"samples": len(names)}
        row["images"] = sum((root / _IMAGE_DIR / f"{n}.jpg").is_file() for n in names)
        for task in TASKS:
            row[task] = sum(_task_path(root, resolved, task, n).is_file() for n in names)
        if (root / NEIGHBOUR_DIR).is_dir():
            row["neighbours"] = sum((root / NEIGHBOUR_DIR / f"{n}.jpg").is_file() for n in names)
        counts[split_file.stem] = row
    return counts
