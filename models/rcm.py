"""Reparameterised convolutions for incremental multi-task learning (RCM).

Kanakis et al., ECCV 2020, "Reparameterizing Convolutions for Incremental Multi-Task
Learning without Task Interference".  Every 3×3 / 7×7 convolution of a ResNet-18 becomes
``y = W_t (W_s ∗ x)``: a frozen, shared filter bank ``W_s`` followed by a task-specific
1×1 modulator ``W_t`` (C_out × C_out).  BatchNorms and the 1×1 downsample convolutions are
task-specific, and each task has its own DeepLabv3+ decoder, so training one task can never
change another task's predictions.

Variants (``variant=``):

* ``conv`` – one plain ResNet-18 per task, every convolution task-specific and trainable
  (single-task-network baseline).  Nothing is shared.
* ``rc`` – reparameterised convolutions, modulators initialised to the identity.
* ``rc_ri`` – as ``rc``; :func:`response_initialise` rewrites ``W_s = Uᵀ W`` and
  ``W_t = U`` from a PCA of the conv responses.  Until it is called the model equals ``rc``.
* ``*_nff`` (``rc_nff``, ``rc_ri_nff``) – normalised feature fusion: every modulator row is
  weight-normalised, ``row_i = g_i v_i / ‖v_i‖`` (``torch.nn.utils.parametrizations``).
* ``ra_series`` / ``ra_parallel`` – residual adapters (Rebuffi et al. 2017 / 2018): a frozen
  shared conv plus a zero-initialised task 1×1 adapter, in series
  (``s + A_t s`` with ``s = W_s ∗ x``) or in parallel (``W_s ∗ x + A_t x``).

Notes / deviations:

* ``shared_parameters()`` yields the frozen banks.  They never receive a gradient, so a
  gradient balancer has nothing to balance on them (empty for ``conv``).
* ``representation_module()`` / ``last_shared_module()`` return the stem's reparameterised
  conv (its bank is the first shared weight).  Its output is task-specific (the modulator is
  inside the module) and it is called once per task per forward.
* The PCA mean of response initialisation needs no folding: all C_out components are kept,
  so ``U`` is orthogonal and ``U Uᵀ (W ∗ x) = W ∗ x`` exactly, mean included; the following
  BatchNorm's running statistics are therefore unchanged.
* The modulator is applied as a 1×1 conv after the bank conv, as in the paper;
  :meth:`RepConv.effective_weight` gives the composed ``W_t W_s`` for inspection or
  merging at deployment.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize
from torchvision.models import resnet18

from models._registry import register_model
from models.tasks import get_task

__all__ = ["VARIANTS", "RCMResNet", "RepConv", "rcm_resnet", "response_initialise"]

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


def _torchvision_resnet18(pretrained_path: str | Path | None) -> nn.Module:
    net = resnet18(weights=None)
    if pretrained_path is None:
        return net
    path = Path(pretrained_path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path} not found; expected a state dict")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = net.state_dict()
    matched = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    if not matched:
        raise ValueError(f"pretrained weights {path} match no torchvision resnet18 parameter")
    net.load_state_dict({k: state[k] for k in matched}, strict=False)
    return net


def _dilate_layer4(layer4: nn.Sequential) -> None:
    """Output stride 16: layer4 stride 1, dilation 2 (first conv keeps dilation 1)."""
    first = True
    for block in layer4:
        for name in ("conv1", "conv2"):
            conv = getattr(block, name)
            conv.stride = (1, 1)
            if not first:
                conv.dilation, conv.padding = (2, 2), (2, 2)
            first = False
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class RCMResNet(nn.Module):
    """ResNet-18 with reparameterised convolutions and one DeepLabv3+ decoder per task."""

    def __init__(
        self,
        tasks: Sequence[str],
        variant: str = "rc_ri",
        decoder_width: int = 256,
        num_classes: int = 5,
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a model needs at least one task")
        if "detection" in tasks:
            raise ValueError("rcm_resnet has dense heads only")
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.nff = variant.endswith("_nff")
        base = variant.removesuffix("_nff")
        mode = "rc" if base in ("rc", "rc_ri") else base
        self.mode = mode
        self.num_classes = num_classes
        self.decoder_width = decoder_width
        self.tasks: tuple[str, ...] = tuple(tasks)
        self._frozen_tasks: set[str] = set()

        net = _torchvision_resnet18(pretrained_path)
        _dilate_layer4(net.layer4)
        self.conv1 = RepConv(net.conv1, tasks, mode, self.nff)
        self.bn1 = _TaskBN(net.bn1, tasks)
        self.layers = nn.ModuleList(
            nn.ModuleList(_Block(b, tasks, mode, self.nff) for b in layer)
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
        )
        self.decoders = _PerTask({t: self._new_decoder(t) for t in tasks})

    def _new_decoder(self, task: str) -> _DeepLabV3PlusHead:
        channels = get_task(task, self.num_classes).channels
        return _DeepLabV3PlusHead(512, 64, self.decoder_width, channels)

    # -- forward --------------------------------------------------------------------------
    def forward_task(self, x: torch.Tensor, task: str) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        h = F.relu(self.bn1(self.conv1(x, task), task))
        h = F.max_pool2d(h, 3, 2, 1)
        low = h
        for i, layer in enumerate(self.layers):
            for block in layer:
                h = block(h, task)
            if i == 0:
                low = h
        pred = self.decoders[task](h, low, size)
        if task == "normals":
            pred = F.normalize(pred, dim=1)
        elif task == "depth":
            pred = F.softplus(pred)
        return pred

    def forward(
        self, x: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        return {t: self.forward_task(x, t) for t in (self.tasks if tasks is None else tasks)}

    # -- parameter groups -----------------------------------------------------------------
    def rep_convs(self) -> Iterator[RepConv]:
        return (m for m in self.modules() if isinstance(m, RepConv))

    def task_modules(self, task: str) -> Iterator[nn.Module]:
        for m in self.modules():
            if isinstance(m, _PerTask) and task in m:
                yield m[task]

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The frozen filter banks (no gradient ever; nothing for a balancer to weigh)."""
        for conv in self.rep_convs():
            if isinstance(conv.bank, nn.Parameter):
                yield conv.bank

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """``task``'s modulators (or convs / adapters), BNs, downsamples and decoder."""
        for m in self.task_modules(task):
            yield from m.parameters()

    def representation_module(self) -> nn.Module:
        """The stem's reparameterised conv (holds the first shared bank); see module doc."""
        return self.conv1

    def last_shared_module(self) -> nn.Module:
        """The stem's reparameterised conv; its only shared parameter is the frozen bank."""
        return self.conv1

    # -- incremental learning -------------------------------------------------------------
    def add_task(self, name: str, channels: int | None = None) -> None:
        """Add a task: modulators from the stored initial ones (identity, or ``U`` after
        response initialisation; ``conv`` copies the initial/pretrained weights), BNs and
        downsamples copied from the first task, and a fresh decoder."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} already exists")
        first = self.tasks[0]
        for m in self.modules():
            if isinstance(m, RepConv):
                m.add_task(name)
            elif isinstance(m, _TaskBN | _TaskDownsample):
                m.per_task[name] = copy.deepcopy(m.per_task[first])
        device = self.conv1.bank.device
        if channels is None:
            channels = get_task(name, self.num_classes).channels
        decoder = _DeepLabV3PlusHead(512, 64, self.decoder_width, channels)
        self.decoders[name] = decoder.to(device)
        self.tasks = (*self.tasks, name)
        self.train(self.training)

    def freeze_except(self, task: str) -> None:
        """Only ``task``'s own parameters train; other tasks' BNs/dropout stay in eval mode."""
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}")
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.task_parameters(task):
            p.requires_grad_(True)
        self._frozen_tasks = set(self.tasks) - {task}
        self.train(self.training)

    def train(self, mode: bool = True) -> RCMResNet:
        super().train(mode)
        for t in self._frozen_tasks:
            for m in self.task_modules(t):
                m.eval()
        return self

    def parameter_counts(self, task: str) -> dict[str, int]:
        """Parameters stored for ``task`` (backbone part / total) and its trainable ones."""
        per_task = list(self.task_parameters(task))
        decoder = sum(p.numel() for p in self.decoders[task].parameters())
        stored = sum(p.numel() for p in per_task)
        return {
            "stored_per_task": stored,
            "backbone_per_task": stored - decoder,
            "decoder": decoder,
            "trainable": sum(p.numel() for p in per_task if p.requires_grad),
            "shared_frozen": sum(p.numel() for p in self.shared_parameters()),
        }

    def response_initialise(self, images: torch.Tensor) -> None:
        response_initialise(self, images)


@torch.no_grad()
def response_initialise(model: RCMResNet, images: torch.Tensor) -> None:
    """Response initialisation (PCA of each conv's responses ``W ∗ x`` on ``images``).

    For each reparameterised conv, with ``U`` the eigenvectors of the response covariance
    over channels (descending eigenvalue): ``W_s ← Uᵀ W`` and every ``W_t ← U`` (and the
    initial modulator new tasks start from), so ``W_t W_s = W``.  Responses are collected
    with the first task's path while every conv still computes ``W`` (call this right after
    construction).  No mean folding is needed (``U`` is orthogonal, see module doc).
    """
    if model.mode != "rc":
        raise ValueError(f"response initialisation needs an rc variant, not {model.variant!r}")
    stats: dict[RepConv, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def hook(module: RepConv, _args: tuple, out: torch.Tensor) -> None:
        # W_t = I here (checked below), so the module's output is the response W ∗ x.
        r = out.transpose(0, 1).flatten(1).double()  # C × N
        s, ss, n = stats.get(module, (0.0, 0.0, 0))
        stats[module] = (s + r.sum(1), ss + r @ r.T, n + r.shape[1])

    convs = list(model.rep_convs())
    for conv in convs:
        w = conv.modulator(model.tasks[0])
        if not torch.allclose(w, torch.eye(w.shape[0], device=w.device, dtype=w.dtype), atol=1e-6):
            raise RuntimeError("response initialisation must run before the modulators change")
    handles = [c.register_forward_hook(hook) for c in convs]
    was_training = model.training
    model.eval()
    try:
        model.forward_task(images, model.tasks[0])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for conv in convs:
        s, ss, n = stats[conv]
        mean = s / n
        cov = ss / n - torch.outer(mean, mean)
        _, vecs = torch.linalg.eigh(cov)
        u = vecs.flip(1)  # columns = principal directions, largest variance first
        w = conv.bank.double().flatten(1)
        conv.bank.copy_((u.T @ w).view_as(conv.bank).to(conv.bank.dtype))
        u32 = u.to(conv.bank.dtype)
        conv.init_modulator.copy_(u32)
        for module in conv.per_task.values():
            if parametrize.is_parametrized(module, "weight"):
                module.weight = u32[:, :, None, None].clone()  # sets g, v via right_inverse
            else:
                module.weight.copy_(u32[:, :, None, None])


@register_model
def rcm_resnet(tasks: Sequence[str], **kwargs: object) -> RCMResNet:
    """RCM (Kanakis et al. 2020): frozen shared banks, task 1×1 modulators, DeepLabv3+."""
    return RCMResNet(tasks, **kwargs)  # type: ignore[arg-type]
