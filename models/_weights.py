"""Pretrained weights from a local file: nothing is ever downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["load_matching"]


def load_matching(module: nn.Module, path: str | Path, prefix: str = "") -> int:
    """Load the tensors of a saved state dict (or ``{"state_dict": ...}``) whose names,
    after removing ``prefix``, and shapes match ``module``'s; the number loaded.

    A missing file is a ``FileNotFoundError`` and a file that matches nothing a
    ``ValueError``, each one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} not found; expected a torch state dict")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained weights {path} are not a state dict")
    own = module.state_dict()
    matched = {
        key.removeprefix(prefix): value
        for key, value in state.items()
        if key.removeprefix(prefix) in own and own[key.removeprefix(prefix)].shape == value.shape
    }
    if not matched:
        raise ValueError(
            f"pretrained weights {path} match no parameter of the model (name and shape)"
        )
    module.load_state_dict(matched, strict=False)
    return len(matched)
