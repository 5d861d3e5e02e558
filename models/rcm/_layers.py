"""Task-conditional ResNet layers: reparameterised convs, per-task BatchNorms and blocks."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

__all__ = ["VARIANTS", "RepConv"]


VARIANTS = ("conv", "rc", "rc_ri", "rc_nff", "rc_ri_nff", "ra_series", "ra_parallel")


class _PerTask(nn.ModuleDict):
    """A task → module dict; marks the model's task-specific parts."""


class RepConv(nn.Module):
    """A (possibly) reparameterised convolution dispatched on the task."""

    def __init__(self, conv: nn.Conv2d, tasks: Sequence[str], mode: str, nff: bool) -> None:
        super().__init__()
        if conv.bias is not None:
            raise ValueError("RepConv expects a bias-free convolution")
        self.mode = mode
        self.nff = nff
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = conv.kernel_size
        weight = conv.weight.detach().clone()
        if mode == "conv":
            # Not used in forward; the template new tasks start from.
            self.register_buffer("bank", weight)
        else:
            self.bank = nn.Parameter(weight, requires_grad=False)
        self.register_buffer("init_modulator", torch.eye(self.out_channels))
        self.per_task = _PerTask({t: self._new_task_module() for t in tasks})

    # -- task modules -------------------------------------------------------------------
    def _new_task_module(self) -> nn.Module:
        c_in, c_out = self.in_channels, self.out_channels
        if self.mode == "conv":
            module = nn.Conv2d(
                c_in,
                c_out,
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                bias=False,
            )
            with torch.no_grad():
                module.weight.copy_(self.bank)
            return module
        if self.mode == "rc":
            module = nn.Conv2d(c_out, c_out, 1, bias=False)
            with torch.no_grad():
                module.weight.copy_(self.init_modulator[:, :, None, None])
            if self.nff:
                module = parametrizations.weight_norm(module, name="weight", dim=0)
            return module
        if self.mode == "ra_series":
            module = nn.Conv2d(c_out, c_out, 1, bias=False)
        else:  # ra_parallel
            module = nn.Conv2d(c_in, c_out, 1, stride=self.stride, bias=False)
        nn.init.zeros_(module.weight)
        return module

    def add_task(self, task: str) -> None:
        self.per_task[task] = self._new_task_module().to(self.bank.device)

    def modulator(self, task: str) -> torch.Tensor:
        """``W_t`` as a (C_out, C_out) matrix (``rc`` modes only)."""
        return self.per_task[task].weight.flatten(1)

    def effective_weight(self, task: str) -> torch.Tensor:
        """The single conv weight the module applies for ``task`` (``conv`` / ``rc``)."""
        if self.mode == "conv":
            return self.per_task[task].weight
        if self.mode != "rc":
            raise ValueError(f"mode {self.mode!r} has no single effective weight")
        w = self.modulator(task) @ self.bank.flatten(1)
        return w.view_as(self.bank)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        if self.mode == "conv":
            return self.per_task[task](x)
        if self.mode == "rc":
            return F.conv2d(self._conv(x, self.bank), self.per_task[task].weight)
        shared = self._conv(x, self.bank)
        adapter = self.per_task[task]
        if self.mode == "ra_series":
            return shared + adapter(shared)
        return shared + adapter(x)


class _TaskBN(nn.Module):
    def __init__(self, bn: nn.BatchNorm2d, tasks: Sequence[str]) -> None:
        super().__init__()
        self.per_task = _PerTask({t: copy.deepcopy(bn) for t in tasks})

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.per_task[task](x)


class _TaskDownsample(nn.Module):
    def __init__(self, downsample: nn.Sequential, tasks: Sequence[str]) -> None:
        super().__init__()
        self.per_task = _PerTask({t: copy.deepcopy(downsample) for t in tasks})

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        return self.per_task[task](x)


class _Block(nn.Module):
    """torchvision's BasicBlock with task-dispatched convs, BNs and downsample."""

    def __init__(self, block: nn.Module, tasks: Sequence[str], mode: str, nff: bool) -> None:
        super().__init__()
        self.conv1 = RepConv(block.conv1, tasks, mode, nff)
        self.bn1 = _TaskBN(block.bn1, tasks)
        self.conv2 = RepConv(block.conv2, tasks, mode, nff)
        self.bn2 = _TaskBN(block.bn2, tasks)
        self.downsample = (
            _TaskDownsample(block.downsample, tasks) if block.downsample is not None else None
        )

    def forward(self, x: torch.Tensor, task: str) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x, task), task))
        out = self.bn2(self.conv2(out, task), task)
        identity = x if self.downsample is None else self.downsample(x, task)
        return F.relu(out + identity)
