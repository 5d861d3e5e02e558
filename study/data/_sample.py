"""The sample every dataset loader yields: the contract between data and trials."""

from __future__ import annotations

from typing import NotRequired, TypedDict

import torch

__all__ = ["Sample"]


class Sample(TypedDict):
    """One item of any loader.

    ``image`` is float32 (3, H, W) in [0, 1], not normalised; ``targets`` follow the
    conventions of :mod:`models.tasks` (ignored pixels 255, invalid depth 0, invalid
    normals all-zero); ``labelled`` says which tasks this image has labels for.
    ``neighbour``, only where a loader was asked for it, is a neighbouring frame of the
    same video as ``image`` (same size and range), augmented exactly as the image is.
    """

    name: str
    image: torch.Tensor
    targets: dict[str, torch.Tensor]
    labelled: dict[str, bool]
    neighbour: NotRequired[torch.Tensor]
