"""The Vision Multi-task Model (VMM) of Yun & Cho, ICCV 2023.

"Achievement-based Training Progress Balancing for Multi-Task Learning" (official code:
github.com/samsung/Achievement-based-MTL, ``models/VMM.py``). This is an independent
re-implementation of its architecture:

* **backbone**: a timm encoder (``efficientnetv2_s`` by default, ``features_only``), read at
  strides 8, 16 and 32;
* **transitions**: one 1×1 conv + BN + ReLU6 per level to ``neck_channels``;
* **neck**: two stacked bidirectional FPNs (the paper's "TRIV2-BiFPN"): top-down
  ``x_i + nearest_up(td_{i+1})``, then bottom-up ``td_i + MBConv_s2(out_{i-1})`` (an
  inverted residual block, expand ratio 2, stride 2);
* **dense heads**: every neck level bilinearly upsampled to stride 8, concatenated, a
  depthwise-separable conv, an MBConv to the task's channels, bilinear upsampling to the
  input size (``normals`` L2-normalised, ``depth`` through softplus);
* **detection head** (``"detection"`` in the tasks): SSD anchors on 4 levels, the neck's 3
  plus a 4th (stride 64) made *inside the detection head* by a stride-2 MBConv of the
  coarsest neck output (so it is task-specific and dense tasks never pay for it); per level
  an MBConv location head and an MBConv confidence head (sigmoid classes, bias −log 99).

Shared = backbone + transitions + neck. The ``"detection"`` output is a float32 tensor
``(B, A, 8 + C)``: ``[:, :, 0:4]`` the decoded boxes, ``[:, :, 4:8]`` the anchors (both
``xyxy`` in input pixels; see :mod:`models._anchors` for shapes and ordering) and
``[:, :, 8:]`` the ``C`` class logits (no background column).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from models._anchors import (
    DEFAULT_SIZES,
    DEFAULT_STEPS,
    DEFAULT_VARIANCES,
    anchors_per_location,
    decode,
    ssd_anchors,
)
from models._registry import register_model
from models._weights import load_matching, timm_model
from models.tasks import activate, get_task

__all__ = ["VMM", "vmm"]

DETECTION = "detection"
_STRIDES = (8, 16, 32)
_PRIOR = 0.01


def _conv_bn_act(
    cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1
) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class _DSConv(nn.Sequential):
    """Depthwise-separable conv: depthwise k×k + BN + ReLU6, pointwise + BN + ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__(_conv_bn_act(cin, cin, kernel, groups=cin), _conv_bn_act(cin, cout))


class _MBConv(nn.Module):
    """Inverted residual: 1×1 expand, depthwise k×k (stride), 1×1 linear projection.

    ``predict=True`` makes the projection a plain conv with bias (a prediction layer, no
    BN, no residual); otherwise it is conv + BN, with a residual when shapes allow.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int = 1,
        expand_ratio: int = 2,
        kernel: int = 3,
        predict: bool = False,
    ) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.expand = _conv_bn_act(cin, hidden)
        self.depthwise = _conv_bn_act(hidden, hidden, kernel, stride, groups=hidden)
        if predict:
            self.project: nn.Module = nn.Conv2d(hidden, cout, 1)
        else:
            self.project = nn.Sequential(
                nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)
            )
        self.residual = not predict and stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class _BiFPN(nn.Module):
    """One bidirectional pass over levels ordered finest first (parameter-free top-down,
    stride-2 MBConv bottom-up); returns a new list."""

    def __init__(self, channels: int, levels: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            _MBConv(channels, channels, stride=2, expand_ratio=2) for _ in range(levels - 1)
        )

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        top_down = [features[-1]]
        for x in reversed(features[:-1]):
            top_down.append(x + F.interpolate(top_down[-1], size=x.shape[-2:], mode="nearest"))
        top_down.reverse()
        out = [top_down[0]]
        for x, down in zip(top_down[1:], self.down, strict=True):
            out.append(x + down(out[-1]))
        return out


class _DenseHead(nn.Module):
    """All levels at stride 8, concatenated, DSConv, MBConv to ``out_channels``."""

    def __init__(self, channels: int, levels: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.fuse = _DSConv(channels * levels, width)
        self.predict = _MBConv(width, out_channels, predict=True)

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        finest = features[0].shape[-2:]
        levels = [features[0]] + [
            F.interpolate(f, size=finest, mode="bilinear", align_corners=False)
            for f in features[1:]
        ]
        out = self.predict(self.fuse(torch.cat(levels, dim=1)))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class _DetectionHead(nn.Module):
    """SSD head on the neck levels plus one extra stride-2 level (anchor layout and box
    coding: :mod:`models._anchors`)."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        sizes: Sequence[float] = DEFAULT_SIZES,
        steps: Sequence[int] = DEFAULT_STEPS,
        ratios: Sequence[float] = (2.0,),
        variances: Sequence[float] = DEFAULT_VARIANCES,
        neck_levels: int = len(_STRIDES),
    ) -> None:
        super().__init__()
        if len(sizes) != len(steps) or len(steps) < neck_levels:
            raise ValueError("detection needs one anchor size per step, a step per level")
        self.num_classes = num_classes
        self.sizes, self.steps = tuple(sizes), tuple(steps)
        self.ratios, self.variances = tuple(ratios), tuple(variances)
        self.k = anchors_per_location(self.ratios)
        self.extra = nn.ModuleList(
            _MBConv(channels, channels, stride=2) for _ in range(len(steps) - neck_levels)
        )
        self.loc = nn.ModuleList(_MBConv(channels, self.k * 4, predict=True) for _ in self.steps)
        self.conf = nn.ModuleList(
            _MBConv(channels, self.k * num_classes, predict=True) for _ in self.steps
        )
        bias = -math.log((1 - _PRIOR) / _PRIOR)
        for heads, value in ((self.loc, 0.0), (self.conf, bias)):
            for head in heads:
                nn.init.normal_(head.project.weight, std=0.01)
                nn.init.constant_(head.project.bias, value)
        self._anchor_cache: dict[tuple[object, ...], torch.Tensor] = {}

    def anchors(
        self, height: int, width: int, grids: Sequence[tuple[int, int]], device: torch.device
    ) -> torch.Tensor:
        key = (height, width, tuple(grids), str(device))
        if key not in self._anchor_cache:
            self._anchor_cache[key] = ssd_anchors(
                height, width, self.sizes, self.steps, self.ratios, sizes_hw=grids, device=device
            )
        return self._anchor_cache[key]

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        levels = list(features)
        for extra in self.extra:
            levels.append(extra(levels[-1]))
        batch = levels[0].shape[0]
        locs, confs = [], []
        for x, loc, conf in zip(levels, self.loc, self.conf, strict=True):
            locs.append(loc(x).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            confs.append(conf(x).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
        grids = [(x.shape[-2], x.shape[-1]) for x in levels]
        anchors = self.anchors(size[0], size[1], grids, levels[0].device)
        deltas = torch.cat(locs, dim=1).float()
        boxes = decode(deltas, anchors, self.variances)
        return torch.cat(
            [boxes, anchors.expand(batch, -1, -1), torch.cat(confs, dim=1).float()], dim=-1
        )


def _strided_indices(encoder: nn.Module, strides: Sequence[int]) -> list[int]:
    reductions = list(encoder.feature_info.reduction())  # type: ignore[union-attr, operator]
    indices = []
    for stride in strides:
        found = [i for i, r in enumerate(reductions) if r == stride]
        if not found:
            raise ValueError(f"backbone has no stride-{stride} features (has {reductions})")
        indices.append(found[-1])
    return indices


class VMM(nn.Module):
    """Vision Multi-task Model: timm backbone, transitions, 2 stacked BiFPNs, task heads.

    ``num_classes`` sets the ``semseg`` channels and the detection classes (override the
    latter with ``detection_classes``); ``head_channels`` (default ``neck_channels``) is
    the width of the dense heads' fusion conv. ``pretrained`` starts the backbone from
    timm's published weights, ``pretrained_path`` from a local state dict.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        backbone: str = "efficientnetv2_s",
        neck_channels: int = 64,
        num_classes: int = 5,
        pretrained_path: str | Path | None = None,
        head_channels: int | None = None,
        detection_classes: int | None = None,
        num_fpn: int = 2,
        anchor_sizes: Sequence[float] = DEFAULT_SIZES,
        anchor_steps: Sequence[int] = DEFAULT_STEPS,
        anchor_ratios: Sequence[float] = (2.0,),
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a model needs at least one task")
        self.tasks = tuple(tasks)
        probe = timm.create_model(backbone, pretrained=False, features_only=True)
        indices = _strided_indices(probe, _STRIDES)
        self.encoder = timm_model(
            backbone, pretrained, pretrained_path, features_only=True, out_indices=tuple(indices)
        )
        if pretrained_path is not None:
            load_matching(self.encoder, pretrained_path)
        channels = self.encoder.feature_info.channels()
        levels = len(channels)
        self.transitions = nn.ModuleList(_conv_bn_act(c, neck_channels) for c in channels)
        self.neck = nn.Sequential(*(_BiFPN(neck_channels, levels) for _ in range(num_fpn)))
        width = head_channels or neck_channels
        heads: dict[str, nn.Module] = {}
        for task in self.tasks:
            if task == DETECTION:
                if list(anchor_steps[:levels]) != list(_STRIDES):
                    raise ValueError(f"the first anchor steps must be the neck's {_STRIDES}")
                heads[task] = _DetectionHead(
                    neck_channels,
                    detection_classes or get_task("detection", num_classes).channels,
                    anchor_sizes,
                    anchor_steps,
                    anchor_ratios,
                    neck_levels=levels,
                )
            else:
                out = get_task(task, num_classes).channels
                heads[task] = _DenseHead(neck_channels, levels, width, out)
        self.heads = nn.ModuleDict(heads)

    def forward(
        self, x: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        features = [t(f) for t, f in zip(self.transitions, self.encoder(x), strict=True)]
        features = self.neck(features)
        size = (x.shape[-2], x.shape[-1])
        names = self.tasks if tasks is None else tasks
        return {t: activate(t, self.heads[t](features, size)) for t in names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return chain(
            self.encoder.parameters(), self.transitions.parameters(), self.neck.parameters()
        )

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()

    def representation_module(self) -> nn.Module:
        """The neck: its output (3 levels, finest first) is what every head reads."""
        return self.neck

    def last_shared_module(self) -> nn.Module:
        """The last conv block of the neck (the last BiFPN's coarsest bottom-up MBConv)."""
        return self.neck[-1].down[-1]


@register_model
def vmm(tasks: Sequence[str], **kwargs: object) -> VMM:
    """Yun & Cho's (ICCV 2023) Vision Multi-task Model: timm backbone, 2 BiFPNs, SSD head."""
    return VMM(tasks, **kwargs)  # type: ignore[arg-type]
