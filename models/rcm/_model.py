"""The RCM ResNet-18: one task-conditional backbone and decoder per task."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torchvision.models import resnet18

from models._registry import register_model
from models._weights import load_matching, timm_model
from models.rcm._decoder import _DeepLabV3PlusHead
from models.rcm._layers import VARIANTS, RepConv, _Block, _PerTask, _TaskBN, _TaskDownsample
from models.tasks import activate, get_task

__all__ = ["RCMResNet", "rcm_resnet", "response_initialise"]


#: timm's copy of torchvision's ImageNet ResNet-18 (the paper's), with torchvision's names.
TORCHVISION_RESNET18 = "resnet18.tv_in1k"


def _torchvision_resnet18(
    pretrained_path: str | Path | None, pretrained: bool = False
) -> nn.Module:
    net = resnet18(weights=None)
    if pretrained:
        published = timm_model(TORCHVISION_RESNET18, True, pretrained_path)
        net.load_state_dict(published.state_dict())
    if pretrained_path is not None:
        load_matching(net, pretrained_path)
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
    """ResNet-18 with reparameterised convolutions and one DeepLabv3+ decoder per task.

    ``pretrained`` starts from torchvision's ImageNet weights (timm's ``resnet18.tv_in1k``,
    through the hub cache), ``pretrained_path`` from a local state dict.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        variant: str = "rc_ri",
        decoder_width: int = 256,
        num_classes: int = 5,
        pretrained_path: str | Path | None = None,
        train_bank: bool = False,
        pretrained: bool = False,
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

        net = _torchvision_resnet18(pretrained_path, pretrained)
        _dilate_layer4(net.layer4)
        self.conv1 = RepConv(net.conv1, tasks, mode, self.nff)
        self.bn1 = _TaskBN(net.bn1, tasks)
        self.layers = nn.ModuleList(
            nn.ModuleList(_Block(b, tasks, mode, self.nff) for b in layer)
            for layer in (net.layer1, net.layer2, net.layer3, net.layer4)
        )
        self.decoders = _PerTask({t: self._new_decoder(t) for t in tasks})
        self.train_bank = train_bank
        if train_bank:
            if mode == "conv":
                raise ValueError("variant 'conv' has no shared bank to train")
            for bank in self.shared_parameters():
                bank.requires_grad_(True)

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
        return activate(task, self.decoders[task](h, low, size))

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
        """The filter banks: frozen unless ``train_bank`` (then every task changes them)."""
        for conv in self.rep_convs():
            if isinstance(conv.bank, nn.Parameter):
                yield conv.bank

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """``task``'s modulators (or convs / adapters), BNs, downsamples and decoder."""
        for m in self.task_modules(task):
            yield from m.parameters()

    def optimizer_groups(self, lr: float) -> list[dict[str, object]]:
        """Trainable parameters; a trained bank gets ``lr / T``, as every task updates it."""
        banks = [p for p in self.shared_parameters() if p.requires_grad]
        ids = {id(p) for p in banks}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups: list[dict[str, object]] = [{"params": rest, "lr": lr}]
        if banks:
            groups.append({"params": banks, "lr": lr / len(self.tasks)})
        return groups

    def initialise_from_data(self, images: torch.Tensor) -> None:
        """Response initialisation for the ``*_ri`` variants; the others need no data."""
        if "_ri" in self.variant:
            response_initialise(self, images)

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
        if self.train_bank:
            raise RuntimeError(
                "a trained bank would change earlier tasks; add tasks only "
                "to a model built with train_bank=False"
            )
        if channels is None:
            channels = get_task(name, self.num_classes).channels
        decoder = _DeepLabV3PlusHead(512, 64, self.decoder_width, channels)
        bank = self.conv1.bank
        self.decoders[name] = decoder.to(device=bank.device, dtype=bank.dtype)
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
        """Parameters stored for ``task`` alone (backbone part, decoder, total), those its
        training updates (its own, plus the banks if they train), and the shared banks."""
        stored = sum(p.numel() for p in self.task_parameters(task))
        decoder = sum(p.numel() for p in self.decoders[task].parameters())
        banks = sum(p.numel() for p in self.shared_parameters())
        return {
            "stored_per_task": stored,
            "backbone_per_task": stored - decoder,
            "decoder": decoder,
            "trainable": stored + (banks if self.train_bank else 0),
            "shared_bank": banks,
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
