"""Hard parameter sharing: one timm encoder, a light decoder head per task."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models._registry import register_model
from models._weights import load_matching, timm_model
from models.tasks import activate, get_task

__all__ = ["HardSharing", "hard_sharing"]


class _Head(nn.Module):
    """Fuses the encoder levels at the finest one, then predicts at full size."""

    def __init__(self, in_channels: Sequence[int], width: int, out_channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        finest = features[0].shape[-2:]
        fused = self.lateral[0](features[0])
        for lateral, feature in zip(self.lateral[1:], features[1:], strict=True):
            fused = fused + F.interpolate(lateral(feature), size=finest, mode="nearest")
        out = self.predict(self.fuse(fused))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class HardSharing(nn.Module):
    """A shared encoder (timm, ``features_only``) and one head per task.

    ``pretrained`` starts the encoder from timm's published weights (``models._weights``),
    ``pretrained_path`` from a local state dict.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        backbone: str = "regnetx_002",
        head_channels: int = 32,
        num_classes: int = 5,
        out_indices: Sequence[int] = (1, 2, 3),
        pretrained_path: str | Path | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a model needs at least one task")
        if "detection" in tasks:
            raise ValueError("hard_sharing has dense heads only; detection needs vmm")
        self.tasks = tuple(tasks)
        self.encoder = timm_model(
            backbone,
            pretrained,
            pretrained_path,
            features_only=True,
            out_indices=tuple(out_indices),
        )
        if pretrained_path is not None:
            load_matching(self.encoder, pretrained_path)
        channels = self.encoder.feature_info.channels()
        self.heads = nn.ModuleDict(
            {
                task: _Head(channels, head_channels, get_task(task, num_classes).channels)
                for task in self.tasks
            }
        )

    def forward(
        self, x: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        features = self.encoder(x)
        size = (x.shape[-2], x.shape[-1])
        names = self.tasks if tasks is None else tasks
        return {t: activate(t, self.heads[t](features, size)) for t in names}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        return self.heads[task].parameters()

    def representation_module(self) -> nn.Module:
        """The module whose outputs are the shared features every head reads."""
        return self.encoder

    def last_shared_module(self) -> nn.Module:
        """The module whose output every head reads (GradNorm's last shared layer)."""
        return list(self.encoder.children())[-1]


@register_model
def hard_sharing(tasks: Sequence[str], **kwargs: object) -> HardSharing:
    """Hard parameter sharing baseline: shared timm encoder, light per-task heads."""
    return HardSharing(tasks, **kwargs)  # type: ignore[arg-type]
