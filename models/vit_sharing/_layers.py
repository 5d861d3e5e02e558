"""A timm ViT block run with per-task weight deltas and delta-activation taps; the decoder."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "POINTS",
    "ConvDecoder",
    "DeltaTap",
    "KeptCounter",
    "Recorder",
    "Tap",
    "attention",
    "base_pass",
    "block_forward",
    "identity_tap",
    "linear_of",
    "tokens_to_grid",
]

#: The delta-activation points of a block, each named after the module whose output it is
#: (``attn`` is the attention context, the input of ``proj``).  Every linear layer's input
#: and output is one of them, so both sides of each delta matmul are sparse.
POINTS: tuple[str, ...] = ("norm1", "qkv", "attn", "proj", "norm2", "fc1", "act", "fc2")

#: ``tap(point, activation) -> activation``: what a pass does at each delta point.
Tap = Callable[[str, torch.Tensor], torch.Tensor]


class KeptCounter(Protocol):
    """Shown each point's thresholded delta (``SharingStats`` is one)."""

    def record(self, point: str, delta: torch.Tensor) -> None: ...


def identity_tap(point: str, a: torch.Tensor) -> torch.Tensor:
    return a


class Recorder:
    """The base pass's tap: keeps every point's activation (detached) for the sub-tasks."""

    def __init__(self, block_input: torch.Tensor) -> None:
        self.trace: dict[str, torch.Tensor] = {"input": block_input.detach()}

    def __call__(self, point: str, a: torch.Tensor) -> torch.Tensor:
        self.trace[point] = a.detach()
        return a


class DeltaTap:
    """A sub-task's tap in one block: ``δ = a − a_base`` at every point.

    ``base`` is any reference pass's points: the base task's on the same frame (task
    deltas), or the same task's on a neighbouring frame (temporal deltas, see
    :mod:`models.vit_sharing._temporal`).  ``l1`` (if given) accumulates ``Σ|δ|`` per
    point, ``magnitudes`` (if given) collects ``|δ|``.  With ``thresholds`` (inference)
    the activation passed on is ``a_base + hardshrink(δ, thr)``: entries with
    ``|δ| ≤ thr`` are dropped, i.e. take the reference's value; ``kept`` (if given) is
    shown every kept ``hardshrink(δ, thr)``, to count the delta work.
    """

    def __init__(
        self,
        base: Mapping[str, torch.Tensor],
        l1: dict[str, torch.Tensor] | None,
        thresholds: Mapping[str, float] | None,
        magnitudes: dict[str, list[torch.Tensor]] | None = None,
        kept: KeptCounter | None = None,
    ) -> None:
        self.base = base
        self.l1 = l1
        self.thresholds = thresholds
        self.magnitudes = magnitudes
        self.kept = kept

    def __call__(self, point: str, a: torch.Tensor) -> torch.Tensor:
        delta = a - self.base[point]
        if self.magnitudes is not None:
            self.magnitudes.setdefault(point, []).append(delta.detach().abs().flatten())
        if self.l1 is not None:
            l1 = delta.abs().sum()
            self.l1[point] = self.l1[point] + l1 if point in self.l1 else l1
        if self.thresholds is None:
            return a
        kept = F.hardshrink(delta, self.thresholds[point])
        if self.kept is not None:
            self.kept.record(point, kept)
        return self.base[point] + kept


def attention(qkv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Multi-head softmax attention of a fused ``(B, N, 3·D)`` qkv, as timm's fused path."""
    b, n, c3 = qkv.shape
    q, k, v = qkv.view(b, n, 3, num_heads, c3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, n, c3 // 3)


def linear_of(block: nn.Module, name: str) -> nn.Linear:
    """The block's linear ``qkv``/``proj`` (attention) or ``fc1``/``fc2`` (MLP)."""
    return getattr(block.attn if name in ("qkv", "proj") else block.mlp, name)


def _linear(a: torch.Tensor, layer: nn.Linear, delta: torch.Tensor | None) -> torch.Tensor:
    weight = layer.weight if delta is None else layer.weight + delta
    return F.linear(a, weight, layer.bias)


def block_forward(
    block: nn.Module,
    x: torch.Tensor,
    deltas: Mapping[str, torch.Tensor] | None,
    tap: Tap,
) -> torch.Tensor:
    """A pre-norm timm ``Block`` (no dropout, no qk-norm) with ``W + ΔW`` on its linears.

    ``deltas`` maps ``qkv``/``proj``/``fc1``/``fc2`` to the task's effective delta (None:
    the base weights).
    """
    attn, mlp = block.attn, block.mlp
    d = deltas or {}
    h = tap("norm1", block.norm1(x))
    h = tap("qkv", _linear(h, attn.qkv, d.get("qkv")))
    h = tap("attn", attention(h, attn.num_heads))
    x = x + block.ls1(tap("proj", _linear(h, attn.proj, d.get("proj"))))
    h = tap("norm2", block.norm2(x))
    h = tap("fc1", _linear(h, mlp.fc1, d.get("fc1")))
    h = tap("act", mlp.act(h))
    return x + block.ls2(tap("fc2", _linear(h, mlp.fc2, d.get("fc2"))))


def base_pass(
    blocks: nn.Module, tokens: torch.Tensor
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The base task's blocks, keeping each block's input and points (detached)."""
    traces = []
    x = tokens
    for block in blocks:
        recorder = Recorder(x)
        x = block_forward(block, x, None, recorder)
        traces.append(recorder.trace)
    return x, traces


def tokens_to_grid(tokens: torch.Tensor, prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, prefix + H·W, C)`` encoder tokens as a ``(B, C, H, W)`` map (prefix dropped)."""
    b, _, c = tokens.shape
    return tokens[:, prefix:].transpose(1, 2).reshape(b, c, *grid)


class ConvDecoder(nn.Module):
    """A light convolutional head on the token grid.

    1×1 reduction to ``width``, then ``upsamplings`` × [3×3 conv, BN, ReLU, ×2 bilinear],
    a 1×1 prediction, and bilinear resizing to the input size.
    """

    def __init__(
        self, in_channels: int, width: int, out_channels: int, upsamplings: int = 2
    ) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, width, 1)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            )
            for _ in range(upsamplings)
        )
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, grid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h = self.reduce(grid)
        for stage in self.stages:
            h = F.interpolate(stage(h), scale_factor=2.0, mode="bilinear", align_corners=False)
        return F.interpolate(self.predict(h), size=size, mode="bilinear", align_corners=False)
