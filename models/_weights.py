"""Pretrained weights: timm's published ones through the Hugging Face hub cache, or a
local file (:func:`load_matching`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import constants as hub_constants
from timm.models import get_pretrained_cfg
from torch import nn

__all__ = ["PretrainedWeightsUnavailable", "load_matching", "timm_model"]


class PretrainedWeightsUnavailable(RuntimeError):
    """timm's published weights are neither in the local hub cache nor downloadable."""


def timm_model(
    name: str, pretrained: bool = False, pretrained_path: str | Path | None = None, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, **kwargs)``; with ``pretrained``, timm's published weights
    for ``name`` (a ``model.tag`` picks a tag), which timm adapts itself (a ViT's position
    embedding to the image size, a dropped classifier).

    The weights come from the Hugging Face hub cache (``$HF_HUB_CACHE``, by default
    ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``), downloaded into it when missing;
    ``HF_HUB_OFFLINE=1`` reads the cache only. Weights neither cached nor downloadable are a
    :class:`PretrainedWeightsUnavailable` naming both ways out; a model timm publishes no
    weights for is a ``ValueError``; ``pretrained`` with ``pretrained_path`` too.
    """
    if pretrained and pretrained_path is not None:
        raise ValueError("pretrained and pretrained_path exclude each other; give one")
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    if not timm.is_model(name):
        return timm.create_model(name, pretrained=True, **kwargs)  # timm's own refusal
    cfg = get_pretrained_cfg(name)
    source = cfg and (cfg.hf_hub_id or cfg.url or cfg.file)
    if not source:
        raise ValueError(
            f"timm publishes no pretrained weights for {name!r}; pick a model that has some "
            f"(timm.list_pretrained('{name.split('.')[0]}*')) or give pretrained_path"
        )
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except OSError as err:  # the hub's errors, offline or not, are OSErrors
        raise PretrainedWeightsUnavailable(
            # The ways out come before the path: a long message is cut at its end.
            f"timm's {name!r} weights are neither cached nor downloadable here; fill HF_HOME "
            "(default ~/.cache/huggingface) where there is network, or set "
            f"pretrained_path: FILE (cache: {hub_constants.HF_HUB_CACHE}; weights: {source}; "
            f"{type(err).__name__})"
        ) from err


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
