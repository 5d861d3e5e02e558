"""Inference cost of a multi-task model, with shared computation counted once."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_gflops", "count_parameters"]


def count_gflops(model: nn.Module, image_size: int, in_channels: int = 3) -> float:
    """GFLOPs of one forward pass on one image, predicting every task at once."""
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, in_channels, image_size, image_size)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
