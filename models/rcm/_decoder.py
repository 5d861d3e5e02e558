"""The per-task DeepLabv3+ decoder: ASPP at output stride 16 and a layer1 skip."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = []


def _conv_bn_relu(c_in: int, c_out: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _ASPP(nn.Module):
    def __init__(self, c_in: int, width: int, rates: Sequence[int] = (6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(c_in, width)] + [_conv_bn_relu(c_in, width, 3, r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(c_in, width))
        self.project = nn.Sequential(
            _conv_bn_relu(width * (len(rates) + 2), width), nn.Dropout(0.5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        pooled = F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear")
        return self.project(torch.cat([*outs, pooled], dim=1))


class _DeepLabV3PlusHead(nn.Module):
    """ASPP (rates 6/12/18 + image pooling) on layer4, 48-channel layer1 skip, 2 3×3 convs."""

    def __init__(self, high: int, low: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.aspp = _ASPP(high, width)
        self.reduce = _conv_bn_relu(low, 48)
        self.fuse = nn.Sequential(
            _conv_bn_relu(width + 48, width, 3), _conv_bn_relu(width, width, 3)
        )
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, high: torch.Tensor, low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear")
        x = self.fuse(torch.cat([x, self.reduce(low)], dim=1))
        return F.interpolate(self.predict(x), size=size, mode="bilinear", align_corners=False)
