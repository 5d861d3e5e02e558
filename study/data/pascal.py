"""PASCAL-Context multi-task (PASCAL-MT), in the layout used by ASTMT, MTI-Net and ATRC.

Layout under ``root``::

    JPEGImages/<id>.jpg                 images
    ImageSets/Context/{train,val}.txt   split files, one id a line
    semseg/pascal-context/<id>.png      semseg: 0..20, 255 = ignore
    semseg/VOC12/<id>.png               (optional) preferred over pascal-context, as upstream
    pascal-context/trainval/<id>.mat    key ``LabelMap``: the full PASCAL-Context labels,
                                        from whose region boundaries the edges are made
    human_parts/<id>.mat                Pascal-Part ``anno`` struct
    normals_distill/<id>.png            RGB, n = 2 x / 255 - 1; raw (0, 0, 0) = invalid
    sal_distill/<id>.png                grey, salient where x / 255 > 0.5

Decoding follows the reference loader (ASTMT ``fblib/dataloaders/pascal_context.py``,
copied into MTI-Net and ATRC):

- edges: ``thin(|Laplacian(LabelMap)| > 0)``, the 4-neighbour Laplacian with mirrored
  borders (OpenCV's default) followed by Guo–Hall thinning (scikit-image's ``thin``), so
  the two-pixel-wide band along each label change is thinned to one pixel;
- human parts: every object of class 15 (person) with part annotations paints its parts
  over a background of 0, with the 6-part grouping of :data:`HUMAN_PART_IDS`; an image
  with no such object is all 255 (upstream's ``AddIgnoreRegions``) and not labelled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from study.data._files import DatasetError, read_rgb, read_split, require_dir
from study.data._sample import Sample
from study.data._synthetic import Scene
from study.metrics import thin_stack

__all__ = [
    "HUMAN_PARTS_CLASSES",
    "HUMAN_PART_IDS",
    "NUM_CLASSES",
    "PASCALContext",
    "TASKS",
    "describe",
    "edges_from_labels",
    "write_pascal",
]

NUM_CLASSES = 21
HUMAN_PARTS_CLASSES = 7  # background + head, torso, upper arms, lower arms, upper legs, lower legs
TASKS = ("semseg", "edges", "human_parts", "normals", "saliency")
SPLITS = ("train", "val")
IGNORE = 255
PERSON_CLASS = 15  # Pascal-Part ``class_ind`` of a person (VOC order)

# Pascal-Part part names of a person -> the 6 part classes (upstream ``HUMAN_PART[6]``).
HUMAN_PART_IDS: dict[str, int] = {
    **dict.fromkeys(
        ("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear", "rebrow", "reye"), 1
    ),
    **dict.fromkeys(("neck", "torso"), 2),
    **dict.fromkeys(("luarm", "ruarm"), 3),
    **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
    **dict.fromkeys(("luleg", "ruleg"), 5),
    **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6),
}

# Folder of each task's files, relative to the root, and the files' suffix.
_TASK_DIRS: dict[str, tuple[str, str]] = {
    "semseg": ("semseg/pascal-context", ".png"),
    "edges": ("pascal-context/trainval", ".mat"),
    "human_parts": ("human_parts", ".mat"),
    "normals": ("normals_distill", ".png"),
    "saliency": ("sal_distill", ".png"),
}
_VOC_SEMSEG_DIR = "semseg/VOC12"


# --------------------------------------------------------------------------- edges


def edges_from_labels(label_map: np.ndarray) -> np.ndarray:
    """Edge map float32 (H, W) in {0, 1} from a label map, as the reference loader.

    A pixel is a candidate where the 4-neighbour Laplacian of the labels is non-zero
    (borders mirrored without repeating the edge pixel, OpenCV's default), which marks
    both sides of every label change; Guo–Hall thinning then keeps a one-pixel line.
    """
    labels = np.asarray(label_map, dtype=np.int64)
    if labels.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {labels.shape}")
    padded = np.pad(labels, 1, mode="reflect") if min(labels.shape) > 1 else np.pad(labels, 1)
    lap = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * labels
    return thin_stack(lap != 0).astype(np.float32)


# --------------------------------------------------------------------------- readers


def _read_png(path: Path, what: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            return np.array(image)
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} not found") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for a broken file
        raise DatasetError(f"{what} {path} cannot be read: {err}") from None


def _load_mat(path: Path, what: str) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} not found") from None
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, ...
        raise DatasetError(f"{what} {path} cannot be read: {err}") from None


def read_semseg(path: Path) -> torch.Tensor:
    """Class ids int64 (H, W): 0..20, 255 = ignore."""
    array = _read_png(path, "semseg label")
    if array.ndim != 2:
        raise DatasetError(f"semseg label {path} must be a single-channel png, got {array.shape}")
    if array.dtype != np.uint8:
        raise DatasetError(f"semseg label {path} holds {array.dtype} pixels; expected an 8-bit png")
    array = array.astype(np.int64)
    bad = (array >= NUM_CLASSES) & (array != IGNORE)
    if bad.any():
        raise DatasetError(
            f"semseg label {path} holds value {int(array[bad][0])}; expected 0..20 or 255"
        )
    return torch.from_numpy(array)


def read_label_map(path: Path) -> np.ndarray:
    """The ``LabelMap`` of a PASCAL-Context .mat file."""
    mat = _load_mat(path, "edge labels")
    if "LabelMap" not in mat:
        raise DatasetError(f"edge labels {path} have no key 'LabelMap'")
    labels = np.asarray(mat["LabelMap"])
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.number):
        raise DatasetError(f"edge labels {path}: LabelMap must be a 2-D numeric array")
    if not np.isfinite(labels).all():
        raise DatasetError(f"edge labels {path}: LabelMap has NaN or infinite labels")
    return labels


def read_edges(path: Path) -> torch.Tensor:
    """Edges float32 (1, H, W) in {0, 1} from the label boundaries of ``LabelMap``."""
    return torch.from_numpy(edges_from_labels(read_label_map(path)))[None]


def read_human_parts(path: Path) -> torch.Tensor | None:
    """Part classes int64 (H, W) in 0..6, or None when no person with parts is annotated.

    The file holds a struct ``anno`` whose second field lists the objects; an object's
    fields are (class, class_ind, mask, parts) and a part's are (part_name, mask), read
    by position as the reference loader does.
    """
    mat = _load_mat(path, "human parts")
    if "anno" not in mat:
        raise DatasetError(f"human parts {path} have no key 'anno'")
    target: np.ndarray | None = None
    try:
        objects = mat["anno"][0][0][1]
        objects = objects[0] if objects.size else []
        for obj in objects:
            parts = obj[3]
            if int(np.asarray(obj[1]).ravel()[0]) != PERSON_CLASS or parts.size == 0:
                continue
            if target is None:
                target = np.zeros(np.asarray(obj[2]).shape, dtype=np.int64)
            for part in parts[0]:
                name = str(np.asarray(part[0]).ravel()[0])
                if name not in HUMAN_PART_IDS:
                    raise DatasetError(f"human parts {path}: unknown person part {name!r}")
                target[np.asarray(part[1]).astype(bool)] = HUMAN_PART_IDS[name]
    except DatasetError:
        raise
    except (IndexError, TypeError, ValueError, KeyError) as err:
        raise DatasetError(f"human parts {path}: malformed 'anno' struct ({err})") from None
    # Upstream marks an all-background map as ignored (``AddIgnoreRegions``).
    if target is None or not target.any():
        return None
    return torch.from_numpy(target)


def read_normals(path: Path) -> torch.Tensor:
    """Unit normals float32 (3, H, W); pixels stored as (0, 0, 0) are invalid (zero)."""
    raw = _read_png(path, "normals")
    if raw.ndim != 3 or raw.shape[2] < 3:
        raise DatasetError(f"normals {path} must be an RGB png, got shape {raw.shape}")
    raw = raw[..., :3]
    normals = 2.0 * raw.astype(np.float32) / 255.0 - 1.0
    norm = np.linalg.norm(normals, axis=2, keepdims=True)
    valid = (raw != 0).any(axis=2, keepdims=True) & (norm > 1e-6)
    normals = np.where(valid, normals / np.maximum(norm, 1e-6), 0.0).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(normals.transpose(2, 0, 1)))


def read_saliency(path: Path) -> torch.Tensor:
    """Saliency float32 (1, H, W): 1 where the grey value / 255 > 0.5."""
    raw = _read_png(path, "saliency")
    if raw.ndim == 3:
        raw = raw[..., 0]
    return torch.from_numpy((raw.astype(np.float32) / 255.0 > 0.5).astype(np.float32))[None]


def _fit(target: torch.Tensor, size: tuple[int, int], task: str) -> torch.Tensor:
    """Resize a target to the image size (upstream does this when they differ)."""
    if tuple(target.shape[-2:]) == size:
        return target
    if task == "normals":
        out = F.interpolate(target[None], size=size, mode="bilinear", align_corners=False)[0]
        norm = out.norm(dim=0, keepdim=True)
        return torch.where(norm > 1e-6, out / norm.clamp_min(1e-6), torch.zeros_like(out))
    batch = target[None, None] if target.ndim == 2 else target[None]
    out = F.interpolate(batch.float(), size=size, mode="nearest-exact").to(target.dtype)
    return out[0, 0] if target.ndim == 2 else out[0]


# --------------------------------------------------------------------------- dataset


class PASCALContext(Dataset):
    """PASCAL-Context MT samples of one split; see the module docstring for the layout.

    ``tasks`` is any subset of :data:`TASKS`. Each item is a :class:`Sample` with targets
    semseg int64 (H, W), edges float32 (1, H, W), human_parts int64 (H, W) in 0..6 with
    255 = ignore, normals float32 (3, H, W), saliency float32 (1, H, W); ``labelled`` is
    True for every task except human_parts on an image without an annotated person
    (its target then is all 255). ``transform`` (a ``Sample -> Sample`` callable) is
    applied last.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: Sequence[str],
        transform: Any = None,
    ) -> None:
        if isinstance(tasks, str):
            raise ValueError(f"tasks must be a sequence of task names, got the string {tasks!r}")
        for task in tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r} for PASCAL-Context; expected {TASKS}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        self.root = require_dir(Path(root), "PASCAL-Context root")
        self.split = split
        self.tasks = tuple(dict.fromkeys(tasks))
        self.transform = transform
        self._image_dir = require_dir(self.root / "JPEGImages", "PASCAL-Context images")
        self._task_dirs = {
            task: require_dir(self.root / _TASK_DIRS[task][0], f"PASCAL-Context {task}")
            for task in self.tasks
        }
        split_dir = require_dir(self.root / "ImageSets" / "Context", "PASCAL-Context splits")
        self.names = read_split(split_dir / f"{split}.txt")

    def __len__(self) -> int:
        return len(self.names)

    def _path(self, task: str, name: str) -> Path:
        folder, suffix = _TASK_DIRS[task]
        if task == "semseg":
            voc = self.root / _VOC_SEMSEG_DIR / f"{name}.png"
            if voc.is_file():
                return voc
        return self._task_dirs[task] / f"{name}{suffix}"

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image = read_rgb(self._image_dir / f"{name}.jpg")
        size = (int(image.shape[1]), int(image.shape[2]))
        targets: dict[str, torch.Tensor] = {}
        labelled: dict[str, bool] = {}
        for task in self.tasks:
            path = self._path(task, name)
            labelled[task] = True
            if task == "semseg":
                target = read_semseg(path)
            elif task == "edges":
                target = read_edges(path)
            elif task == "normals":
                target = read_normals(path)
            elif task == "saliency":
                target = read_saliency(path)
            else:
                parts = read_human_parts(path) if path.is_file() else None
                if parts is None:
                    labelled[task] = False
                    parts = torch.full(size, IGNORE, dtype=torch.int64)
                target = parts
            targets[task] = _fit(target, size, task)
        sample = Sample(name=name, image=image, targets=targets, labelled=labelled)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


def describe(root: str | Path) -> dict[str, dict[str, int]]:
    """Per split present: the number of samples, and of samples having each task's file.

    ``{"train": {"images": n, "semseg": n, ...}, "val": {...}}``; human_parts counts the
    part files, whether or not they annotate a person.
    """
    root = require_dir(Path(root), "PASCAL-Context root")
    split_dir = require_dir(root / "ImageSets" / "Context", "PASCAL-Context splits")
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        if not (split_dir / f"{split}.txt").is_file():
            continue
        names = read_split(split_dir / f"{split}.txt")
        counts = {"images": sum((root / "JPEGImages" / f"{n}.jpg").is_file() for n in names)}
        for task, (folder, suffix) in _TASK_DIRS.items():
            found = 0
            for n in names:
                path = root / folder / f"{n}{suffix}"
                voc = root / _VOC_SEMSEG_DIR / f"{n}.png"
                found += path.is_file() or (task == "semseg" and voc.is_file())
            counts[task] = found
        out[split] = counts
    if not out:
        raise DatasetError(f"no split file train.txt or val.txt in {split_dir}")
    return out


# --------------------------------------------------------------------------- writer


def write_pascal(out: str | Path, split_scenes: Mapping[str, Sequence[tuple[str, Scene]]]) -> None:
    """Write synthetic scenes as a PASCAL-Context MT tree that :class:`PASCALContext` reads.

    Per scene: the image as JPEG (quality 95, so the image round-trips only approximately),
    semseg ids as they are (they must lie in 0..20), a ``LabelMap`` that numbers each
    (class, instance) region distinctly so that the loaded edges are the thinned
    boundaries of semseg and instances, normals encoded as ``round((n + 1) / 2 · 255)``,
    saliency as 0 / 255. No human-part files are written (the folder is created empty):
    synthetic scenes contain no people, so human_parts loads as all 255, unlabelled.
    """
    out = Path(out)
    for split in split_scenes:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    dirs = {
        "images": out / "JPEGImages",
        "splits": out / "ImageSets" / "Context",
        **{task: out / folder for task, (folder, _) in _TASK_DIRS.items()},
    }
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    for split, scenes in split_scenes.items():
        names = []
        for name, scene in scenes:
            semseg = np.asarray(scene.semseg)
            if semseg.min() < 0 or semseg.max() >= NUM_CLASSES:
                raise ValueError(
                    f"scene {name!r}: semseg ids must lie in 0..{NUM_CLASSES - 1}, "
                    f"got {int(semseg.min())}..{int(semseg.max())}"
                )
            image = np.clip(np.rint(scene.image * 255.0), 0, 255).astype(np.uint8)
            Image.fromarray(image, "RGB").save(dirs["images"] / f"{name}.jpg", quality=95)
            Image.fromarray(semseg.astype(np.uint8), "L").save(dirs["semseg"] / f"{name}.png")
            label_map = (semseg + NUM_CLASSES * np.asarray(scene.instances)).astype(np.uint16)
            scipy.io.savemat(str(dirs["edges"] / f"{name}.mat"), {"LabelMap": label_map})
            normals = np.clip(np.rint((scene.normals + 1.0) / 2.0 * 255.0), 0, 255)
            normals = normals.astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(np.ascontiguousarray(normals), "RGB").save(
                dirs["normals"] / f"{name}.png"
            )
            saliency = np.where(scene.saliency > 0.5, 255, 0).astype(np.uint8)
            Image.fromarray(saliency, "L").save(dirs["saliency"] / f"{name}.png")
            names.append(name)
        (dirs["splits"] / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
