"""SSD anchors and the SSD centre-size box parameterisation, on ``xyxy`` pixel boxes.

Anchors follow the Vision Multi-task Model (VMM) of Yun & Cho (ICCV 2023, the official
Achievement-based-MTL code, itself RefineDet/SSD style): one base size per level
(32/64/128/256 at strides 8/16/32/64) and, at every location, ``1 + 2 * len(ratios)``
shapes: ``s × s``, then for each ratio ``r`` a wide ``s√r × s/√r`` and a tall
``s/√r × s√r`` box (width × height). With the default ``ratios=(2.0,)`` that is 3 anchors
per location, as the VMM detection head predicts.

Ordering of the anchors (and of every per-anchor prediction): level, then location in
row-major order (row ``i`` over the height, column ``j`` over the width), then shape.
The centre of location ``(i, j)`` at step ``t`` is ``((j + 0.5) t, (i + 0.5) t)`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "DEFAULT_SIZES",
    "DEFAULT_STEPS",
    "DEFAULT_VARIANCES",
    "anchors_per_location",
    "decode",
    "encode",
    "feature_sizes",
    "ssd_anchors",
]

DEFAULT_SIZES: tuple[int, ...] = (32, 64, 128, 256)
DEFAULT_STEPS: tuple[int, ...] = (8, 16, 32, 64)
DEFAULT_VARIANCES: tuple[float, float] = (0.1, 0.2)

# exp() of a width/height delta is capped at 1000/16 (as torchvision's box coder does), so
# an untrained head cannot overflow to inf.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


def anchors_per_location(ratios: Sequence[float] = (2.0,)) -> int:
    """Anchor shapes at each location: ``s × s`` plus a wide and a tall box per ratio."""
    return 1 + 2 * len(ratios)


def feature_sizes(height: int, width: int, steps: Sequence[int]) -> list[tuple[int, int]]:
    """The feature map size at each step: ``ceil(size / step)``, as stride-2 convs with
    "same" padding give."""
    return [(math.ceil(height / step), math.ceil(width / step)) for step in steps]


def _shapes(size: float, ratios: Sequence[float]) -> list[tuple[float, float]]:
    shapes = [(float(size), float(size))]
    for ratio in ratios:
        root = math.sqrt(ratio)
        shapes.append((size * root, size / root))
        shapes.append((size / root, size * root))
    return shapes


def ssd_anchors(
    height: int,
    width: int,
    sizes: Sequence[float] = DEFAULT_SIZES,
    steps: Sequence[int] = DEFAULT_STEPS,
    ratios: Sequence[float] = (2.0,),
    *,
    sizes_hw: Sequence[tuple[int, int]] | None = None,
    clip: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SSD anchors for a ``height × width`` image, ``(A, 4)`` ``xyxy`` in pixels.

    ``sizes_hw`` gives the feature map size of each level (default
    :func:`feature_sizes`); ``clip`` clamps the boxes to the image. ``A`` is
    ``sum(h_l * w_l) * anchors_per_location(ratios)``.
    """
    if len(sizes) != len(steps):
        raise ValueError(f"{len(sizes)} anchor sizes for {len(steps)} steps")
    grids = list(sizes_hw) if sizes_hw is not None else feature_sizes(height, width, steps)
    if len(grids) != len(steps):
        raise ValueError(f"{len(grids)} feature sizes for {len(steps)} steps")
    levels = []
    for size, step, (rows, cols) in zip(sizes, steps, grids, strict=True):
        cy = (torch.arange(rows, device=device, dtype=torch.float64) + 0.5) * step
        cx = (torch.arange(cols, device=device, dtype=torch.float64) + 0.5) * step
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")  # row-major locations
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # (L, 1, 2)
        wh = torch.tensor(_shapes(size, ratios), device=device, dtype=torch.float64)
        half = (wh / 2).unsqueeze(0)  # (1, K, 2)
        boxes = torch.cat([centres - half, centres + half], dim=-1)  # (L, K, 4)
        levels.append(boxes.reshape(-1, 4))
    anchors = torch.cat(levels, dim=0)
    if clip:
        anchors[:, 0::2] = anchors[:, 0::2].clamp(0, width)
        anchors[:, 1::2] = anchors[:, 1::2].clamp(0, height)
    return anchors.to(dtype)


def _centre_size(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]


def encode(
    boxes: torch.Tensor,
    anchors: torch.Tensor,
    variances: Sequence[float] = DEFAULT_VARIANCES,
) -> torch.Tensor:
    """SSD regression targets of ``xyxy`` boxes w.r.t. ``xyxy`` anchors (broadcasting).

    ``((c - c_a) / (v0 · wh_a), log(wh / wh_a) / v1)``; boxes need positive width/height.
    """
    centre, size = _centre_size(boxes)
    a_centre, a_size = _centre_size(anchors)
    offset = (centre - a_centre) / (variances[0] * a_size)
    scale = torch.log(size / a_size) / variances[1]
    return torch.cat([offset, scale], dim=-1)


def decode(
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    variances: Sequence[float] = DEFAULT_VARIANCES,
) -> torch.Tensor:
    """Inverse of :func:`encode`: ``xyxy`` boxes from deltas and ``xyxy`` anchors.

    The log-scale ``v1 · delta`` is capped at ``log(1000 / 16)`` to keep ``exp`` finite.
    """
    a_centre, a_size = _centre_size(anchors)
    centre = a_centre + deltas[..., :2] * variances[0] * a_size
    size = a_size * torch.exp((deltas[..., 2:] * variances[1]).clamp(max=_MAX_LOG_SCALE))
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)
