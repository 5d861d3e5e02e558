"""PASCAL VOC object detection, in the layout of the VOCdevkit (VOC2007 / VOC2012).

Layout under ``root``::

    JPEGImages/<id>.jpg                              images
    Annotations/<id>.xml                             VOC XML, one ``<object>`` per box
    ImageSets/Main/{train,val,trainval,test}.txt     split files, one id a line

An ``<object>`` holds ``<name>`` (one of :data:`CLASSES`), ``<difficult>`` (0 or 1;
missing means 0) and ``<bndbox>`` with ``<xmin> <ymin> <xmax> <ymax>``: 1-based pixel
indices, both ends inclusive. They are converted to the 0-based, end-exclusive xyxy
pixel boxes of :mod:`models.tasks` (the convention of the synthetic scenes) as
``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``, so a box covering pixel columns
``0..w-1`` of the image reads ``(0, w)``.

The target ``detection`` is float32 ``(max_objects, 5)``, rows ``[x1, y1, x2, y2, class]``
with ``class`` the index into :data:`CLASSES` (0..19, no background, as the synthetic
detection target's ``semantic class - 1``), padded with rows whose class is -1. An image
with more (kept) objects than ``max_objects`` is an error rather than being truncated:
silently dropping boxes would bias both training and mAP.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from study.data._files import DatasetError, read_rgb, read_split, require_dir
from study.data._sample import Sample
from study.data._synthetic import Scene

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "SPLITS",
    "TASKS",
    "VOCDetection",
    "VOCObject",
    "describe",
    "read_annotation",
    "write_voc",
]

CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(CLASSES) + 1  # with the background, as semseg counts: 21
TASKS = ("detection",)
SPLITS = ("train", "val", "trainval", "test")
_CLASS_INDEX = {name: index for index, name in enumerate(CLASSES)}


# --------------------------------------------------------------------------- reader

VOCObject = tuple[float, float, float, float, int, bool]
"""One annotated box: 0-based xyxy pixels, class index in CLASSES, difficult."""


def _coordinate(box: ET.Element, tag: str, path: Path) -> float:
    node = box.find(tag)
    if node is None or node.text is None:
        raise DatasetError(f"annotation {path}: <bndbox> has no <{tag}>")
    try:
        value = float(node.text.strip())
    except ValueError:
        raise DatasetError(f"annotation {path}: <{tag}> is not a number: {node.text!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"annotation {path}: <{tag}> is not finite: {node.text!r}")
    return value


def read_annotation(path: Path) -> list[VOCObject]:
    """The objects of a VOC XML file, boxes converted to 0-based xyxy (module docstring)."""
    try:
        tree = ET.parse(path)
    except FileNotFoundError:
        raise DatasetError(f"annotation {path} not found") from None
    except ET.ParseError as err:
        raise DatasetError(f"annotation {path} is not valid XML: {err}") from None
    except OSError as err:
        raise DatasetError(f"annotation {path} cannot be read: {err}") from None
    objects: list[VOCObject] = []
    for obj in tree.getroot().iter("object"):
        name_node = obj.find("name")
        if name_node is None or not (name_node.text or "").strip():
            raise DatasetError(f"annotation {path}: an <object> has no <name>")
        name = (name_node.text or "").strip()
        if name not in _CLASS_INDEX:
            raise DatasetError(
                f"annotation {path}: unknown class {name!r}; expected one of the 20 VOC classes"
            )
        difficult_node = obj.find("difficult")
        difficult_text = (difficult_node.text or "").strip() if difficult_node is not None else ""
        if difficult_text not in ("", "0", "1"):
            raise DatasetError(
                f"annotation {path}: <difficult> must be 0 or 1, got {difficult_text!r}"
            )
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"annotation {path}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _coordinate(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin or ymax < ymin:
            raise DatasetError(
                f"annotation {path}: object {name!r} has an empty box "
                f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
            )
        objects.append(
            (xmin - 1.0, ymin - 1.0, xmax, ymax, _CLASS_INDEX[name], difficult_text == "1")
        )
    return objects


# --------------------------------------------------------------------------- dataset


class VOCDetection(Dataset):
    """VOC detection samples of one split; see the module docstring for layout and target.

    ``keep_difficult=False`` (the usual training choice) drops objects marked difficult;
    ``max_objects`` bounds the kept objects of one image (more is a :class:`DatasetError`
    naming the file and the count). ``labelled`` is ``{"detection": True}`` for every
    image, including one without objects (its target is all padding). ``transform`` (a
    ``Sample -> Sample`` callable) is applied last.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: Sequence[str] = TASKS,
        max_objects: int = 64,
        keep_difficult: bool = False,
        transform: Any = None,
    ) -> None:
        if isinstance(tasks, str):
            raise ValueError(f"tasks must be a sequence of task names, got the string {tasks!r}")
        for task in tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r} for PASCAL VOC; expected {TASKS}")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if max_objects < 1:
            raise ValueError(f"max_objects must be at least 1, got {max_objects}")
        self.root = require_dir(Path(root), "PASCAL VOC root")
        self.split = split
        self.tasks = tuple(dict.fromkeys(tasks))
        self.max_objects = int(max_objects)
        self.keep_difficult = bool(keep_difficult)
        self.transform = transform
        self._image_dir = require_dir(self.root / "JPEGImages", "PASCAL VOC images")
        self._annotation_dir = require_dir(self.root / "Annotations", "PASCAL VOC annotations")
        split_dir = require_dir(self.root / "ImageSets" / "Main", "PASCAL VOC splits")
        self.names = read_split(split_dir / f"{split}.txt")

    def __len__(self) -> int:
        return len(self.names)

    def detection_target(self, name: str) -> torch.Tensor:
        """The padded (max_objects, 5) target of image ``name``."""
        path = self._annotation_dir / f"{name}.xml"
        objects = [o for o in read_annotation(path) if self.keep_difficult or not o[5]]
        if len(objects) > self.max_objects:
            raise DatasetError(
                f"annotation {path} has {len(objects)} objects, more than "
                f"max_objects={self.max_objects}"
            )
        target = torch.zeros((self.max_objects, 5), dtype=torch.float32)
        target[:, 4] = -1.0
        if objects:
            target[: len(objects)] = torch.tensor([o[:5] for o in objects], dtype=torch.float32)
        return target

    def __getitem__(self, index: int) -> Sample:
        name = self.names[index]
        image = read_rgb(self._image_dir / f"{name}.jpg")
        targets: dict[str, torch.Tensor] = {}
        labelled: dict[str, bool] = {}
        if "detection" in self.tasks:
            targets["detection"] = self.detection_target(name)
            labelled["detection"] = True
        sample = Sample(name=name, image=image, targets=targets, labelled=labelled)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


def describe(root: str | Path) -> dict[str, dict[str, int]]:
    """Per split present: images found, annotation files found, and objects in them.

    ``{"train": {"images": n, "detection": n, "objects": n}, ...}``; ``objects`` counts
    every object of the annotation files found, difficult ones included.
    """
    root = require_dir(Path(root), "PASCAL VOC root")
    split_dir = require_dir(root / "ImageSets" / "Main", "PASCAL VOC splits")
    out: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        if not (split_dir / f"{split}.txt").is_file():
            continue
        names = read_split(split_dir / f"{split}.txt")
        images = annotations = objects = 0
        for name in names:
            images += (root / "JPEGImages" / f"{name}.jpg").is_file()
            path = root / "Annotations" / f"{name}.xml"
            if path.is_file():
                annotations += 1
                objects += len(read_annotation(path))
        out[split] = {"images": images, "detection": annotations, "objects": objects}
    if not out:
        raise DatasetError(f"no split file {', '.join(f'{s}.txt' for s in SPLITS)} in {split_dir}")
    return out


# --------------------------------------------------------------------------- writer


def _annotation_xml(name: str, scene: Scene) -> ET.ElementTree:
    height, width = scene.image.shape[:2]
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC"
    ET.SubElement(root, "filename").text = f"{name}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    boxes = np.asarray(scene.boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(scene.labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"scene {name!r}: {len(boxes)} boxes but {len(labels)} labels")
    for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
        if not 1 <= label <= len(CLASSES):
            raise ValueError(
                f"scene {name!r}: labels must lie in 1..{len(CLASSES)} for VOC, got {int(label)}"
            )
        # 0-based end-exclusive -> 1-based inclusive, rounding outward, kept in the image.
        xmin = min(max(math.floor(x1) + 1, 1), width)
        ymin = min(max(math.floor(y1) + 1, 1), height)
        xmax = min(max(math.ceil(x2), xmin), width)
        ymax = min(max(math.ceil(y2), ymin), height)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = CLASSES[int(label) - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", xmin), ("ymin", ymin), ("xmax", xmax), ("ymax", ymax)):
            ET.SubElement(bndbox, tag).text = str(value)
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def write_voc(out: str | Path, split_scenes: Mapping[str, Sequence[tuple[str, Scene]]]) -> None:
    """Write synthetic scenes as a VOC tree that :class:`VOCDetection` reads.

    Per scene: the image as JPEG (quality 95, so it round-trips only approximately) and
    an XML whose objects are the scene's boxes with class name ``CLASSES[label - 1]``
    (labels must lie in 1..20), converted to 1-based inclusive coordinates rounding
    outward (``xmin = floor(x1) + 1``, ``xmax = ceil(x2)``), so integer boxes round-trip
    exactly. Each split lists its ids in ``ImageSets/Main/<split>.txt``.
    """
    out = Path(out)
    for split in split_scenes:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    image_dir = out / "JPEGImages"
    annotation_dir = out / "Annotations"
    split_dir = out / "ImageSets" / "Main"
    for folder in (image_dir, annotation_dir, split_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for split, scenes in split_scenes.items():
        names = []
        for name, scene in scenes:
            tree = _annotation_xml(name, scene)
            image = np.clip(np.rint(scene.image * 255.0), 0, 255).astype(np.uint8)
            Image.fromarray(image, "RGB").save(image_dir / f"{name}.jpg", quality=95)
            tree.write(annotation_dir / f"{name}.xml", encoding="unicode")
            names.append(name)
        (split_dir / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
