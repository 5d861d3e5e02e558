"""Synthetic multi-task scenes: a tilted floor plane with shaded objects in front of it.

Every label is derived from one geometric scene, and the image is rendered from the same
geometry, so every task is learnable from pixels:

- each object class has its own colour and shape (shapes cycle with the class id);
- apparent size is ``focal * radius / depth`` and colours fade into a dark fog with depth;
- Lambertian shading from a fixed light makes the surface normals visible;
- the floor carries a texture fixed in world coordinates, so its perspective shows depth.

Camera: pinhole, focal length ``image_size`` pixels, principal point at the image centre,
looking along +z with x to the right and y down. ``depth`` is the z coordinate in metres.

A scene's *neighbouring frame* (for temporal deltas) is the same scene a moment later:
the camera, floor and noise stay, every object moves by up to 1/32 of the image size.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from models.tasks import list_tasks

__all__ = ["SYNTHETIC_TASKS", "Scene", "SyntheticScenes", "render_scene"]

#: The tasks a rendered scene labels, in the order benchmarks take them.
SYNTHETIC_TASKS = ("semseg", "depth", "normals", "edges", "saliency", "detection")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Towards the light: up, left and behind the camera, so surfaces facing the camera are lit.
_LIGHT = np.array([-0.35, -0.55, -0.76]) / np.linalg.norm([-0.35, -0.55, -0.76])
_AMBIENT = 0.3
_FOG_COLOUR = np.array([0.18, 0.2, 0.26])
_FOG_DENSITY = 0.12  # per metre beyond 1 m
_NOISE_STD = 0.02

_SHAPES = ("disc", "square", "triangle", "ellipse", "diamond")
_CURVED = frozenset({"disc", "ellipse"})
# How far (a fraction of the image size, per axis) an object moves to its neighbouring frame.
_MOTION = 1.0 / 32.0

# Per-channel statistics of rendered images (64x64, 5 classes, 4 objects, 2000 samples).
IMAGE_MEAN = (0.400, 0.409, 0.432)
IMAGE_STD = (0.082, 0.108, 0.105)


@dataclass(frozen=True)
class Scene:
    """One rendered scene; arrays are numpy, H = W = ``image_size``.

    ``instances`` (int64, H×W) numbers the visible surfaces: 0 is the background and
    k ≥ 1 is the object whose box and label are ``boxes[k - 1]`` and ``labels[k - 1]``.
    """

    image: np.ndarray  # float32 (H, W, 3) in [0, 1]
    semseg: np.ndarray  # int64 (H, W), 0 = background
    depth: np.ndarray  # float32 (H, W), metres, > 0
    normals: np.ndarray  # float32 (3, H, W), unit, facing the camera
    edges: np.ndarray  # float32 (H, W) in {0, 1}
    saliency: np.ndarray  # float32 (H, W) in {0, 1}
    boxes: np.ndarray  # float32 (N, 4), xyxy pixels
    labels: np.ndarray  # int64 (N,)
    instances: np.ndarray  # int64 (H, W)


def _class_colour(cls: int, num_classes: int) -> np.ndarray:
    # Evenly spaced saturated hues, far from the grey floor.
    hue = (cls - 1) / max(num_classes - 1, 1)
    return np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.95))


def _shape_mask(shape: str, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inside-mask and height profile in [0, 1] of ``shape`` in unit coordinates."""
    if shape == "disc":
        rho2 = x**2 + y**2
        return rho2 <= 1.0, np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    if shape == "ellipse":
        rho2 = x**2 + (y / 0.6) ** 2
        return rho2 <= 1.0, np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    flat = np.zeros_like(x)
    if shape == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= 0.85, flat
    if shape == "triangle":
        return (y <= 0.75) & (np.abs(x) <= (y + 1.0) * 0.55), flat
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= 1.0, flat
    raise ValueError(f"unknown shape {shape!r}")


def _normals_from_depth(depth: np.ndarray, rays: np.ndarray, surfaces: np.ndarray) -> np.ndarray:
    """Unit normals (3, H, W) of the back-projected points, facing the camera.

    Differences are taken only between pixels of the same surface, so normals next to an
    occlusion boundary come from the surface itself rather than from the jump.
    """
    points = depth[None] * rays

    def tangent(axis: int) -> np.ndarray:
        diff = np.diff(points, axis=axis)
        same = (np.diff(surfaces, axis=axis - 1) == 0).astype(np.float64)[None]
        pad_lo = [(0, 0)] * 3
        pad_hi = [(0, 0)] * 3
        pad_lo[axis] = (1, 0)
        pad_hi[axis] = (0, 1)
        weighted = diff * same
        total = np.pad(weighted, pad_lo) + np.pad(weighted, pad_hi)
        count = np.pad(same, pad_lo) + np.pad(same, pad_hi)
        return total / np.maximum(count, 1.0)

    normals = np.cross(tangent(2), tangent(1), axis=0)
    norm = np.linalg.norm(normals, axis=0)
    # A surface one pixel thin has no tangent plane; let it face the camera.
    degenerate = norm < 1e-12
    normals = np.where(degenerate[None], -rays, normals)
    norm = np.linalg.norm(normals, axis=0)
    normals = normals / norm[None]
    facing_away = (normals * points).sum(axis=0) > 0
    normals = np.where(facing_away[None], -normals, normals)
    return normals


def _occlusion_edges(surfaces: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """1-px contours: at each change of surface, the nearer of the two pixels."""
    edges = np.zeros(surfaces.shape, dtype=bool)
    for axis in (0, 1):
        change = np.diff(surfaces, axis=axis) != 0
        near_first = np.diff(depth, axis=axis) > 0  # the first pixel of the pair is nearer
        first = change & near_first
        second = change & ~near_first
        if axis == 0:
            edges[:-1] |= first
            edges[1:] |= second
        else:
            edges[:, :-1] |= first
            edges[:, 1:] |= second
    return edges


def render_scene(
    rng: np.random.Generator,
    image_size: int = 64,
    num_classes: int = 5,
    max_objects: int = 4,
    motion: np.random.Generator | None = None,
) -> Scene:
    """Render one scene; everything random comes from ``rng``.

    ``num_classes`` counts the background (class 0); objects take classes
    ``1 .. num_classes - 1``. Between 1 and ``max_objects`` objects are placed, some of
    which may end up hidden behind nearer ones (hidden objects get no box).  With
    ``motion`` each object is moved by up to ``image_size / 32`` pixels per axis, drawn
    from it: the scene's neighbouring frame.  ``rng`` is drawn from alike either way, so
    the rest of the scene is the same.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8, got {image_size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (background + 1), got {num_classes}")
    if max_objects < 0:
        raise ValueError(f"max_objects must be non-negative, got {max_objects}")

    size = image_size
    focal = float(size)
    centre = (size - 1) / 2.0
    coords = (np.arange(size, dtype=np.float64) - centre) / focal
    xs = np.broadcast_to(coords[None, :], (size, size))
    ys = np.broadcast_to(coords[:, None], (size, size))
    rays = np.stack([xs, ys, np.ones((size, size))])

    # Floor plane: 1/z is affine in the ray coordinates, nearest at the bottom row.
    near = rng.uniform(4.3, 5.0)
    far = rng.uniform(7.5, 9.0)
    tilt = rng.uniform(-0.015, 0.015)
    top, bottom = coords[0], coords[-1]
    inv = (1 / near) * (ys - top) / (bottom - top) + (1 / far) * (bottom - ys) / (bottom - top)
    depth = 1.0 / (inv + tilt * xs)

    # Floor albedo: a grey with a slight tint, modulated by a smooth checker in world x/z.
    grey = rng.uniform(0.55, 0.65)
    floor_colour = grey + rng.uniform(-0.04, 0.04, size=3)
    period = rng.uniform(0.8, 1.2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    world_x = depth * xs
    checker = np.sin(2 * np.pi * world_x / period + phase[0]) * np.sin(
        2 * np.pi * depth / period + phase[1]
    )
    albedo = floor_colour[:, None, None] * (1.0 + 0.12 * checker)[None]

    semseg = np.zeros((size, size), dtype=np.int64)
    surfaces = np.zeros((size, size), dtype=np.int64)

    count = int(rng.integers(1, max_objects + 1)) if max_objects > 0 else 0
    objects = []
    for _ in range(count):
        cls = int(rng.integers(1, num_classes))
        radius = rng.uniform(0.3, 0.6)  # metres
        u0 = rng.uniform(0.1, 0.9) * (size - 1)
        v0 = rng.uniform(0.15, 0.9) * (size - 1)
        if motion is not None:
            u0 += motion.uniform(-1.0, 1.0) * _MOTION * size
            v0 += motion.uniform(-1.0, 1.0) * _MOTION * size
        z0 = rng.uniform(1.5, 5.5)
        # Keep the object in front of the floor: the floor is nearest at the footprint's
        # lowest row, and a nearer object has a larger footprint, hence a few passes.
        for _ in range(3):
            r_px = focal * radius / z0
            row = int(np.clip(np.ceil(v0 + r_px), 0, size - 1))
            z0 = min(z0, float(depth[row].min()) - radius - 0.2)
        z0 = max(z0, 1.0)
        slope = rng.uniform(-0.35, 0.35, size=2)
        colour = np.clip(_class_colour(cls, num_classes) + rng.uniform(-0.05, 0.05, 3), 0, 1)
        objects.append((z0, cls, radius, u0, v0, slope, colour))

    # Far to near; the depth test below makes the order matter only for exact ties.
    objects.sort(key=lambda o: -o[0])
    for index, (z0, cls, radius, u0, v0, slope, colour) in enumerate(objects, start=1):
        r_px = focal * radius / z0
        lo_u, hi_u = max(int(np.floor(u0 - r_px)), 0), min(int(np.ceil(u0 + r_px)) + 1, size)
        lo_v, hi_v = max(int(np.floor(v0 - r_px)), 0), min(int(np.ceil(v0 + r_px)) + 1, size)
        if lo_u >= hi_u or lo_v >= hi_v:
            continue
        x = (np.arange(lo_u, hi_u)[None, :] - u0) / r_px
        y = (np.arange(lo_v, hi_v)[:, None] - v0) / r_px
        x, y = np.broadcast_arrays(x, y)
        shape = _SHAPES[(cls - 1) % len(_SHAPES)]
        inside, height = _shape_mask(shape, x, y)
        if shape in _CURVED:
            obj_depth = z0 - 0.9 * radius * height
        else:
            obj_depth = z0 + radius * (slope[0] * x + slope[1] * y)
        window = (slice(lo_v, hi_v), slice(lo_u, hi_u))
        visible = inside & (obj_depth < depth[window])
        depth[window] = np.where(visible, obj_depth, depth[window])
        semseg[window] = np.where(visible, cls, semseg[window])
        surfaces[window] = np.where(visible, index, surfaces[window])
        albedo[(slice(None), *window)] = np.where(
            visible[None], colour[:, None, None], albedo[(slice(None), *window)]
        )

    # Renumber the visible objects 1..N and give each its mask's box.
    boxes, labels = [], []
    instances = np.zeros_like(surfaces)
    for index, (_, cls, *_rest) in enumerate(objects, start=1):
        mask = surfaces == index
        if not mask.any():
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(cls)
        instances[mask] = len(labels)

    normals = _normals_from_depth(depth, rays, instances)
    edges = _occlusion_edges(instances, depth)

    shade = _AMBIENT + (1 - _AMBIENT) * np.clip(np.tensordot(_LIGHT, normals, axes=1), 0, None)
    transmission = np.exp(-_FOG_DENSITY * (depth - 1.0))[None]
    image = albedo * shade[None] * transmission + _FOG_COLOUR[:, None, None] * (1 - transmission)
    image = image.transpose(1, 2, 0) + _NOISE_STD * rng.standard_normal((size, size, 3))

    return Scene(
        image=np.clip(image, 0.0, 1.0).astype(np.float32),
        semseg=semseg,
        depth=depth.astype(np.float32),
        normals=normals.astype(np.float32),
        edges=edges.astype(np.float32),
        saliency=(semseg != 0).astype(np.float32),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        instances=instances,
    )


def _detection_target(scene: Scene, max_objects: int) -> torch.Tensor:
    """Rows (x1, y1, x2, y2, class) padded to ``max_objects`` with class −1; the detector's
    classes skip the background, so semantic class c is detection class c − 1."""
    rows = torch.full((max_objects, 5), -1.0)
    count = len(scene.labels)
    rows[:count, :4] = torch.from_numpy(scene.boxes)
    rows[:count, 4] = torch.from_numpy(scene.labels - 1).float()
    return rows


class SyntheticScenes(Dataset):
    """Scenes rendered on the fly; sample ``i`` depends only on ``(seed, split, i)``.

    Items are ``{"image": (3, H, W) float32 normalised with IMAGE_MEAN/IMAGE_STD,
    "targets": {task: tensor}, "labelled": {task: True}}`` for the requested tasks, in
    the formats of :mod:`models.tasks`; with ``neighbours`` also ``"neighbour"``, the
    image of the scene's neighbouring frame (:meth:`neighbour_scene`), normalised alike.
    """

    def __init__(
        self,
        num_samples: int,
        tasks: Sequence[str],
        split: str = "train",
        image_size: int = 64,
        num_classes: int = 5,
        max_objects: int = 4,
        seed: int = 0,
        neighbours: bool = False,
    ) -> None:
        if isinstance(tasks, str):
            raise ValueError(f"tasks must be a sequence of task names, got the string {tasks!r}")
        allowed = [t for t in list_tasks() if t in SYNTHETIC_TASKS]
        for task in tasks:
            if task not in allowed:
                raise ValueError(
                    f"unknown task {task!r} for synthetic scenes; expected one of {allowed}"
                )
        if split not in _SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; expected one of {list(_SPLIT_CODES)}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be non-negative, got {num_samples}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        # Fail at construction rather than on the first item.
        if image_size < 8 or num_classes < 2 or max_objects < 0:
            render_scene(np.random.default_rng(0), image_size, num_classes, max_objects)

        self.num_samples = num_samples
        self.tasks = tuple(dict.fromkeys(tasks))
        self.split = split
        self.image_size = image_size
        self.num_classes = num_classes
        self.max_objects = max_objects
        self.seed = seed
        self.neighbours = neighbours
        self._mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(IMAGE_STD, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return self.num_samples

    def _key(self, index: int) -> list[int]:
        index = int(index)
        if index < 0:
            index += self.num_samples
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index out of range for {self.num_samples} samples")
        return [self.seed, _SPLIT_CODES[self.split], index]

    def scene(self, index: int) -> Scene:
        """The raw rendered scene behind item ``index``."""
        rng = np.random.default_rng(self._key(index))
        return render_scene(rng, self.image_size, self.num_classes, self.max_objects)

    def neighbour_scene(self, index: int) -> Scene:
        """Scene ``index`` a moment later: its objects slightly moved."""
        key = self._key(index)
        rng, motion = np.random.default_rng(key), np.random.default_rng([*key, 1])
        return render_scene(rng, self.image_size, self.num_classes, self.max_objects, motion)

    def neighbour(self, index: int) -> torch.Tensor:
        """The image of :meth:`neighbour_scene`, normalised as items' images are."""
        return self._normalised(self.neighbour_scene(index).image)

    def _normalised(self, image: np.ndarray) -> torch.Tensor:
        chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return (chw - self._mean) / self._std

    def __getitem__(self, index: int) -> dict[str, dict[str, torch.Tensor | bool] | torch.Tensor]:
        scene = self.scene(index)
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            if task == "semseg":
                targets[task] = torch.from_numpy(scene.semseg)
            elif task == "detection":
                targets[task] = _detection_target(scene, self.max_objects)
            elif task == "normals":
                targets[task] = torch.from_numpy(scene.normals)
            else:
                targets[task] = torch.from_numpy(getattr(scene, task))[None]
        item: dict[str, dict[str, torch.Tensor | bool] | torch.Tensor] = {
            "image": self._normalised(scene.image),
            "targets": targets,
            "labelled": {task: True for task in self.tasks},
        }
        if self.neighbours:
            item["neighbour"] = self.neighbour(index)
        return item
