"""Joint augmentations of a :class:`~study.data.Sample`: callables ``Sample -> Sample``.

Geometric transforms move the image and every target together:

- the image is resampled bilinearly;
- normals bilinearly, then renormalised; a pixel whose nearest source pixel is invalid
  (all-zero), or whose interpolated vector vanishes, stays the zero vector;
- everything else (semseg, human_parts, edges, saliency, depth, unknown keys) by nearest
  neighbour, so label values stay in their original set. Depth values are kept as they
  are (metres are not rescaled with the image).

A sample's neighbouring frame (``neighbour``, if it has one) goes through every image
operation with the same draws as the image, so the two differ only by what moved.

Padding fills the image with 0, normals and depth with 0 (invalid) and label maps with
255 (ignore). Random transforms draw from the ``torch.Generator`` they are given (or
torch's global one), so a seeded generator reproduces the same augmentations. Inputs are
not modified; each transform returns a new sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from study.data._files import DatasetError
from study.data._sample import Sample

__all__ = [
    "Compose",
    "Normalize",
    "PadTo",
    "PhotometricJitter",
    "RandomCropPad",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "Transform",
]

Transform = Callable[[Sample], Sample]

IGNORE = 255
# Pad values of targets that are not label maps; every other target pads with IGNORE.
_PAD_VALUES = {"normals": 0.0, "depth": 0.0}


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _with(
    sample: Sample, op: Callable[[torch.Tensor], torch.Tensor], targets: dict[str, torch.Tensor]
) -> Sample:
    """``sample`` with ``op`` applied to its image (and its neighbouring frame), and
    ``targets``."""
    out = Sample(
        name=sample["name"],
        image=op(sample["image"]),
        targets=targets,
        labelled=dict(sample["labelled"]),
    )
    if "neighbour" in sample:
        out["neighbour"] = op(sample["neighbour"])
    return out


def _same(image: torch.Tensor) -> torch.Tensor:
    return image


def _resize_nearest(target: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    batch = target.reshape(1, -1, *target.shape[-2:])
    out = F.interpolate(batch.float(), size=size, mode="nearest-exact").to(target.dtype)
    return out.reshape(*target.shape[:-2], *size)


def _resize_normals(normals: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    valid = (normals != 0).any(dim=0, keepdim=True)
    valid = _resize_nearest(valid, size)
    out = F.interpolate(normals[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    norm = out.norm(dim=0, keepdim=True)
    valid = valid & (norm > 1e-6)
    return torch.where(valid, out / norm.clamp_min(1e-6), torch.zeros_like(out)).to(normals.dtype)


# Detection targets are rows (x1, y1, x2, y2, class) in pixels, class −1 for padding; they
# move with the image instead of being resampled.


def _boxes_scaled(rows: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    out = rows.clone()
    valid = rows[:, 4] >= 0
    out[valid, :4] *= torch.tensor([sx, sy, sx, sy], dtype=rows.dtype)
    return out


def _boxes_cropped(rows: torch.Tensor, top: int, left: int, size: tuple[int, int]) -> torch.Tensor:
    out = rows.clone()
    shift = torch.tensor([left, top, left, top], dtype=rows.dtype)
    limit = torch.tensor([size[1], size[0], size[1], size[0]], dtype=rows.dtype)
    out[:, :4] = torch.minimum((rows[:, :4] - shift).clamp_min(0), limit)
    # A box cut to less than a pixel across is no object any more.
    gone = (out[:, 2] - out[:, 0] < 1) | (out[:, 3] - out[:, 1] < 1) | (rows[:, 4] < 0)
    out[gone] = torch.tensor([0, 0, 0, 0, -1], dtype=rows.dtype)
    return out


def _boxes_flipped(rows: torch.Tensor, width: int) -> torch.Tensor:
    out = rows.clone()
    valid = rows[:, 4] >= 0
    out[valid, 0] = width - rows[valid, 2]
    out[valid, 2] = width - rows[valid, 0]
    return out


def _resize(sample: Sample, size: tuple[int, int]) -> Sample:
    image = sample["image"]
    if tuple(image.shape[-2:]) == size:
        return _with(sample, _same, dict(sample["targets"]))
    h, w = image.shape[-2:]

    def resized(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]

    targets = {}
    for task, t in sample["targets"].items():
        if task == "detection":
            targets[task] = _boxes_scaled(t, size[1] / w, size[0] / h)
        elif task == "normals":
            targets[task] = _resize_normals(t, size)
        else:
            targets[task] = _resize_nearest(t, size)
    return _with(sample, resized, targets)


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class Resize:
    """Resize to ``size`` = (height, width) (evaluation); interpolation as the module says."""

    def __init__(self, size: tuple[int, int]) -> None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) of positive ints, got {size}")
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        return _resize(sample, self.size)


class PadTo:
    """Pad (bottom/right) up to ``size`` = (height, width), nothing cropped (evaluation at
    a dataset's own resolution). The image and normals/depth pad with 0, label maps with
    255, so the padding is not scored; a larger image is a :class:`DatasetError`."""

    def __init__(self, size: tuple[int, int]) -> None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) of positive ints, got {size}")
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        th, tw = self.size
        h, w = sample["image"].shape[-2:]
        if h > th or w > tw:
            raise DatasetError(
                f"image {sample['name']!r} is {h}x{w}, larger than the {th}x{tw} it is "
                "padded to for evaluation; set dataset.eval_resolution: train"
            )
        pad = (0, tw - w, 0, th - h)  # left, right, top, bottom

        def fit(x: torch.Tensor, value: float) -> torch.Tensor:
            return F.pad(x, pad, value=value) if pad[1] or pad[3] else x

        targets = {
            task: t if task == "detection" else fit(t, _PAD_VALUES.get(task, IGNORE))
            for task, t in sample["targets"].items()
        }
        return _with(sample, lambda x: fit(x, 0.0), targets)


class RandomScale:
    """Rescale by a factor drawn uniformly from [``low``, ``high``]."""

    def __init__(
        self, low: float = 0.5, high: float = 2.0, generator: torch.Generator | None = None
    ) -> None:
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        self.low, self.high, self.generator = low, high, generator

    def __call__(self, sample: Sample) -> Sample:
        factor = _uniform(self.low, self.high, self.generator)
        h, w = sample["image"].shape[-2:]
        size = (max(1, round(h * factor)), max(1, round(w * factor)))
        return _resize(sample, size)


class RandomCropPad:
    """Pad (bottom/right) up to ``size`` = (height, width) if smaller, then crop randomly.

    The image and normals/depth pad with 0, label maps with 255.
    """

    def __init__(self, size: tuple[int, int], generator: torch.Generator | None = None) -> None:
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) of positive ints, got {size}")
        self.size = (int(size[0]), int(size[1]))
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        th, tw = self.size
        h, w = sample["image"].shape[-2:]
        pad = (0, max(tw - w, 0), 0, max(th - h, 0))  # left, right, top, bottom
        ph, pw = h + pad[3], w + pad[1]
        top = int(torch.randint(ph - th + 1, (), generator=self.generator))
        left = int(torch.randint(pw - tw + 1, (), generator=self.generator))

        def fit(x: torch.Tensor, value: float) -> torch.Tensor:
            if pad[1] or pad[3]:
                x = F.pad(x, pad, value=value)
            return x[..., top : top + th, left : left + tw]

        targets = {
            task: _boxes_cropped(t, top, left, self.size)
            if task == "detection"
            else fit(t, _PAD_VALUES.get(task, IGNORE))
            for task, t in sample["targets"].items()
        }
        return _with(sample, lambda x: fit(x, 0.0), targets)


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``; the normals' x component changes sign."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, sample: Sample) -> Sample:
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return _with(sample, _same, dict(sample["targets"]))
        targets = {}
        width = sample["image"].shape[-1]
        for task, t in sample["targets"].items():
            if task == "detection":
                targets[task] = _boxes_flipped(t, width)
                continue
            t = t.flip(-1)
            if task == "normals":
                t = t.clone()
                t[0] = -t[0]
            targets[task] = t
        return _with(sample, lambda x: x.flip(-1), targets)


class PhotometricJitter:
    """Random brightness, contrast, saturation and hue of the image (in [0, 1]) only.

    Factors are drawn uniformly from [1 - x, 1 + x] for brightness, contrast and
    saturation and the hue shift from [-hue, hue] (a fraction of the colour circle, at
    most 0.5); they apply in that order and the result is clipped to [0, 1].
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.02,
        generator: torch.Generator | None = None,
    ) -> None:
        for name, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must lie in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (
            brightness,
            contrast,
            saturation,
            hue,
        )
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        # Imported on use: torchvision imports torch._dynamo, seconds that a study's driver
        # (which reads this module for the dataset formats) never needs.
        from torchvision.transforms.v2 import functional as TF

        g = self.generator
        b = _uniform(1 - self.brightness, 1 + self.brightness, g)
        c = _uniform(1 - self.contrast, 1 + self.contrast, g)
        s = _uniform(1 - self.saturation, 1 + self.saturation, g)
        h = _uniform(-self.hue, self.hue, g)

        def jitter(image: torch.Tensor) -> torch.Tensor:
            image = TF.adjust_brightness(image.clamp(0.0, 1.0), b)
            image = TF.adjust_contrast(image, c)
            image = TF.adjust_saturation(image, s)
            if not math.isclose(h, 0.0):
                image = TF.adjust_hue(image, h)
            return image.clamp(0.0, 1.0)

        return _with(sample, jitter, dict(sample["targets"]))


class Normalize:
    """``(image - mean) / std`` per channel; targets untouched."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"need 3 means and 3 positive stds, got {mean}, {std}")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, sample: Sample) -> Sample:
        def normalised(image: torch.Tensor) -> torch.Tensor:
            return (image - self.mean.to(image)) / self.std.to(image)

        return _with(sample, normalised, dict(sample["targets"]))
