"""The ViT computation-sharing model: a base task's encoder, gated deltas for the others."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path

import torch
from torch import nn

from models._registry import register_model
from models._weights import load_matching, timm_model
from models.tasks import activate, get_task
from models.vit_sharing import _cost, _stages, _temporal
from models.vit_sharing._gates import LINEARS, TaskDeltas
from models.vit_sharing._layers import (
    POINTS,
    ConvDecoder,
    DeltaTap,
    Tap,
    base_pass,
    block_forward,
    identity_tap,
    linear_of,
    tokens_to_grid,
)
from models.vit_sharing._sharing import BaseTrace, SharingPlan, base_trace, build_plan, sub_features
from models.vit_sharing._stages import STEPS
from models.vit_sharing._temporal import FrameTrace, frame_pass

__all__ = ["BACKBONES", "STEPS", "ViTSharing", "vit_sharing"]

BACKBONES: tuple[str, ...] = (
    "vit_tiny_patch16_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
)


def _per_name(
    value: float | Mapping[str, float], names: Sequence[str], default: float, what: str
) -> dict[str, float]:
    """A float for every name, or a partial mapping over ``default``."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(names, float(value))
    unknown = set(value) - set(names)
    if unknown:
        raise ValueError(f"{what} names unknown keys {sorted(unknown)}; expected {list(names)}")
    return {name: float(value.get(name, default)) for name in names}


class ViTSharing(nn.Module):
    """A base task's ViT and, per sub-task, ``W_sub = W_base + z⊙ΔW`` on every block linear.

    See the package docstring for the method, the training steps and the sharing path.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        base_task: str | None = None,
        num_classes: int = 5,
        backbone: str = "vit_tiny_patch16_224",
        image_size: int = 64,
        patch_size: int = 16,
        depth: int | None = None,
        decoder_width: int = 64,
        pretrained_path: str | Path | None = None,
        delta_threshold: float | Mapping[str, float] = 0.15,
        delta_l1_weight: float | Mapping[str, float] = 2.5e-10,
        l0_lambda: float | Mapping[str, float] = 5e-8,
        gate_lr: float | None = None,
        temporal_l1_weight: float | Mapping[str, float] = 0.0,
        temporal_threshold: float | Mapping[str, float] = 0.15,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"a model needs at least one task, each once; got {list(tasks)}")
        if "detection" in tasks:
            raise ValueError("vit_sharing has dense heads only; detection needs vmm")
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; expected one of {BACKBONES}")
        if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
            raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by the patch {patch_size}")
        if base_task is None:
            base_task = "semseg" if "semseg" in tasks else tasks[0]
        if base_task not in tasks:
            raise ValueError(f"base task {base_task!r} is not one of the tasks {list(tasks)}")
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.base_task = base_task
        self.sub_tasks: tuple[str, ...] = tuple(t for t in tasks if t != base_task)
        self.image_size = image_size
        self.num_classes = num_classes
        self.decoder_width = decoder_width
        # A shallower ViT takes the first ``depth`` of the published blocks.
        extra = {} if depth is None else {"depth": depth, "pretrained_strict": False}
        self.encoder = timm_model(
            backbone,
            pretrained,
            pretrained_path,
            img_size=image_size,
            patch_size=patch_size,
            num_classes=0,
            **extra,
        )
        if pretrained_path is not None:
            # Also takes a saved ViTSharing state dict (keys under "encoder.").
            load_matching(self.encoder, pretrained_path, prefix="encoder.")
        shapes = [
            {n: tuple(linear_of(b, n).weight.shape) for n in LINEARS} for b in self.encoder.blocks
        ]
        self.deltas = nn.ModuleDict({t: TaskDeltas(shapes) for t in self.sub_tasks})
        self.decoders = nn.ModuleDict({t: self.new_decoder(t) for t in self.tasks})
        self.delta_threshold = _per_name(delta_threshold, POINTS, 0.15, "delta_threshold")
        self.delta_l1_weight = _per_name(delta_l1_weight, POINTS, 2.5e-10, "delta_l1_weight")
        self.l0_lambda = _per_name(l0_lambda, self.sub_tasks, 5e-8, "l0_lambda")
        # Video: the L1 of a frame's activations against its neighbour's (0: off), and
        # the thresholds below which a non-keyframe reuses the previous frame's.
        self.temporal_l1_weight = _per_name(temporal_l1_weight, POINTS, 0.0, "temporal_l1_weight")
        if any(w < 0 for w in self.temporal_l1_weight.values()):
            raise ValueError(f"temporal_l1_weight must be non-negative, got {temporal_l1_weight}")
        self.temporal_threshold = _per_name(temporal_threshold, POINTS, 0.15, "temporal_threshold")
        self.gate_lr = gate_lr
        self.stage: tuple[str, str] | None = None
        self._frozen: set[str] = set()
        self._delta_l1: dict[str, dict[str, torch.Tensor]] = {}

    def new_decoder(self, task: str) -> ConvDecoder:
        channels = get_task(task, self.num_classes).channels
        return ConvDecoder(self.encoder.embed_dim, self.decoder_width, channels)

    # -- forward --------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token and position embedding (shared by every task)."""
        enc = self.encoder
        return enc.norm_pre(enc.patch_drop(enc._pos_embed(enc.patch_embed(x))))

    def grid(self, features: torch.Tensor) -> torch.Tensor:
        grid = tuple(self.encoder.patch_embed.grid_size)
        return tokens_to_grid(features, self.encoder.num_prefix_tokens, grid)  # type: ignore[arg-type]

    def _requested(self, tasks: Sequence[str] | None) -> tuple[str, ...]:
        requested = self.tasks if tasks is None else tuple(tasks)
        unknown = [t for t in requested if t not in self.tasks]
        if unknown:
            raise KeyError(f"unknown tasks {unknown}; the model has {list(self.tasks)}")
        return requested

    def forward(
        self, x: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Predictions of ``tasks`` (all by default).

        The base pass runs once; a sub-task compares its activations with it: delta L1
        in training (see :meth:`delta_l1`), thresholding in eval mode.  In training the
        base pass is skipped when the base task is not asked for and no delta-activation
        penalty is active.
        """
        requested = self._requested(tasks)
        subs = [t for t in requested if t != self.base_task]
        tokens = self.embed(x)
        delta_act = self.stage is not None and self.stage[1] == "delta_act"
        streams: dict[str, torch.Tensor] = {}
        traces: list[dict[str, torch.Tensor]] | None = None
        if self.base_task in requested or (subs and (not self.training or delta_act)):
            streams[self.base_task], traces = base_pass(self.encoder.blocks, tokens)
        self._delta_l1 = {}
        for task in subs:
            l1: dict[str, torch.Tensor] | None = None
            if traces is not None and self.training:
                l1 = self._delta_l1[task] = {}
            streams[task] = self._encode_sub(tokens, task, traces, l1)
        # One call of the final norm over every task's tokens: representation_module().
        features = self.encoder.norm(torch.cat([streams[t] for t in requested]))
        size = (x.shape[-2], x.shape[-1])
        return {
            t: activate(t, self.decoders[t](self.grid(f), size))
            for t, f in zip(requested, features.split(x.shape[0]), strict=True)
        }

    def _encode_sub(
        self,
        tokens: torch.Tensor,
        task: str,
        traces: list[dict[str, torch.Tensor]] | None,
        l1: dict[str, torch.Tensor] | None,
    ) -> torch.Tensor:
        deltas: TaskDeltas = self.deltas[task]  # type: ignore[assignment]
        thresholds = None if self.training else self.delta_threshold
        x = tokens
        for i, block in enumerate(self.encoder.blocks):
            tap: Tap = identity_tap if traces is None else DeltaTap(traces[i], l1, thresholds)
            x = block_forward(block, x, deltas.weights(i), tap)
        return x

    # -- sharing inference ----------------------------------------------------------------
    @torch.no_grad()
    def base_trace(self, x: torch.Tensor) -> BaseTrace:
        """The base pass with every block's activations kept for :meth:`forward_shared`."""
        return base_trace(self.encoder, self.embed(x))

    @torch.no_grad()
    def sharing_plan(self, tasks: Sequence[str] | None = None) -> SharingPlan:
        """Sparse deltas of the sub-tasks among ``tasks`` (at the inference gates)."""
        if self.training:
            raise RuntimeError("a sharing plan uses the inference gates; call model.eval() first")
        subs = [t for t in self._requested(tasks) if t != self.base_task]
        return build_plan(self.encoder, {t: self.deltas[t] for t in subs})  # type: ignore[misc]

    @torch.no_grad()
    def forward_shared(
        self,
        x: torch.Tensor,
        tasks: Sequence[str] | None = None,
        plan: SharingPlan | None = None,
        trace: BaseTrace | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eval-mode predictions through the sharing path; equal to ``forward`` in eval.

        ``plan`` (from :meth:`sharing_plan`, reusable while the weights do not change) and
        ``trace`` (from :meth:`base_trace` on ``x``) are built when not given.
        """
        if self.training:
            raise RuntimeError("forward_shared is an inference path; call model.eval() first")
        requested = self._requested(tasks)
        trace = self.base_trace(x) if trace is None else trace
        plan = self.sharing_plan(requested) if plan is None else plan
        size = (x.shape[-2], x.shape[-1])
        out: dict[str, torch.Tensor] = {}
        for task in requested:
            if task == self.base_task:
                features = trace.features
            else:
                features = sub_features(
                    self.encoder, trace, plan.deltas[task], plan.base_t, self.delta_threshold
                )
            out[task] = activate(task, self.decoders[task](self.grid(features), size))
        return out

    # -- training steps and penalties -----------------------------------------------------
    def set_stage(self, task: str, step: str) -> None:
        """Train ``task`` in ``step`` (one of :data:`STEPS`); everything else is frozen.

        ``masked``/``delta_act`` fix the sub-task's masks (``z_eval > 0``, folded into
        ``ΔW``); ``gates`` releases them (training the gates again from the folded ``ΔW``).
        Use a fresh optimizer per stage: momentum from an earlier stage would otherwise
        move entries the stage keeps fixed.
        """
        _stages.set_stage(self, task, step)
        self.stage = (task, step)
        self._frozen = set(self.tasks) - {task}
        self.train(self.training)

    def train(self, mode: bool = True) -> ViTSharing:
        """Frozen tasks' decoders (BN statistics) and gates (deterministic) stay in eval."""
        super().train(mode)
        for task in self._frozen:
            self.decoders[task].eval()
            if task in self.deltas:
                self.deltas[task].eval()
        return self

    def l0_penalty(self, task: str) -> torch.Tensor:
        """``Σ sigmoid(log α − β log(−l/r))`` over every gate of sub-task ``task``."""
        return self.deltas[task].l0()  # type: ignore[operator]

    def delta_l1(self, task: str) -> dict[str, torch.Tensor]:
        """``Σ|δ|`` per point (summed over blocks and the batch) of the last forward, if it
        was a training-mode forward that ran the base pass."""
        if task not in self._delta_l1:
            raise RuntimeError(f"the last forward computed no delta-activation L1 for {task!r}")
        return self._delta_l1[task]

    def penalty(self, tasks: Sequence[str] | None = None) -> torch.Tensor:
        """The active sub-tasks' penalties (add to the loss).

        No stage set (joint training): every sub-task's ``λ·L0``.  Stage ``(t, gates)``:
        ``λ_t·L0(t)``; ``(t, delta_act)``: ``Σ_point w_point·Σ|δ_point|`` of the last
        forward; ``base`` and ``masked``: zero.
        """
        return _stages.penalty(self, self._requested(tasks))

    # -- video: temporal deltas -----------------------------------------------------------
    @property
    def temporal(self) -> bool:
        """Whether training adds the temporal penalty (some ``temporal_l1_weight`` > 0)."""
        return any(w > 0 for w in self.temporal_l1_weight.values())

    def temporal_l1(
        self, task: str, frames: torch.Tensor, neighbours: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``Σ|a(frames) − a(neighbours)|`` per point of ``task``'s encoder (gradient
        through the frames only; one gate draw for both)."""
        return _temporal.temporal_l1(self, task, frames, neighbours)

    def temporal_penalty(
        self, frames: torch.Tensor, neighbours: torch.Tensor, tasks: Sequence[str] | None = None
    ) -> torch.Tensor:
        """``Σ_point temporal_l1_weight[point]·Σ|a(frame) − a(neighbour)|`` of the task the
        stage trains (each of ``tasks`` without a stage); add it to the loss."""
        return _temporal.temporal_penalty(self, frames, neighbours, self._requested(tasks))

    @torch.no_grad()
    def forward_temporal(
        self,
        x: torch.Tensor,
        previous: FrameTrace | None = None,
        tasks: Sequence[str] | None = None,
        task_blocks: int = 0,
    ) -> tuple[dict[str, torch.Tensor], FrameTrace]:
        """Eval-mode predictions of ``x`` as a keyframe (``previous`` None, equal to
        ``forward``) or as the frame after ``previous``, reusing the previous frame's
        activations where they moved by at most ``temporal_threshold``; and the trace the
        next frame takes as ``previous``.  A sub-task takes task deltas from the base for
        its first ``task_blocks`` blocks, temporal deltas after."""
        if self.training:
            raise RuntimeError("forward_temporal is an inference path; call model.eval() first")
        requested = self._requested(tasks)
        outputs, trace = frame_pass(self, x, previous, requested, task_blocks)
        size = (x.shape[-2], x.shape[-1])
        preds = {}
        for task in requested:
            features = self.grid(self.encoder.norm(outputs[task]))
            preds[task] = activate(task, self.decoders[task](features, size))
        return preds, trace

    # -- parameter groups -----------------------------------------------------------------
    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The base encoder: the weights every sub-task reuses (``W_sub = W_base + z⊙ΔW``)."""
        return self.encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        """The task's decoder, and for a sub-task its deltas and gates."""
        if task == self.base_task:
            return self.decoders[task].parameters()
        return chain(self.deltas[task].parameters(), self.decoders[task].parameters())

    def optimizer_groups(self, lr: float) -> list[dict[str, object]]:
        """Trainable parameters; the gates' log-α at ``gate_lr`` (when given), undecayed."""
        return _stages.optimizer_groups(self, lr)

    def representation_module(self) -> nn.Module:
        """The encoder's final norm, called once per forward on every task's tokens
        (concatenated along the batch in the order the tasks were asked for)."""
        return self.encoder.norm

    def last_shared_module(self) -> nn.Module:
        """The encoder's final norm: its parameters are on every task's path."""
        return self.encoder.norm

    # -- compute accounting ---------------------------------------------------------------
    def delta_weight_density(self, task: str) -> float:
        return _cost.delta_weight_density(self, task)

    def delta_activation_density(self, task: str, x: torch.Tensor) -> dict[str, float]:
        return _cost.delta_activation_density(self, task, x)

    def calibrate_thresholds(
        self, task: str, x: torch.Tensor, density: float, sweeps: int = 10
    ) -> dict[str, float]:
        return _cost.calibrate_thresholds(self, task, x, density, sweeps)

    def stored_parameters(self, task: str) -> int:
        return _cost.stored_parameters(self, task)

    def task_gflops(self, task: str, x: torch.Tensor) -> float:
        return _cost.task_gflops(self, task, x)

    def dense_gflops(self, task: str | None = None) -> float:
        return _cost.dense_gflops(self, self.base_task if task is None else task)

    def compute_report(
        self, x: torch.Tensor, neighbours: torch.Tensor | None = None
    ) -> dict[str, dict[str, float]]:
        return _cost.compute_report(self, x, neighbours)

    def temporal_report(
        self, x: torch.Tensor, previous: torch.Tensor, task_blocks: int = 0
    ) -> dict[str, dict[str, float]]:
        return _cost.temporal_report(self, x, previous, task_blocks)


@register_model
def vit_sharing(tasks: Sequence[str], **kwargs: object) -> ViTSharing:
    """Computation sharing (Shoouri et al. 2023): a base ViT, sparse gated deltas per task."""
    return ViTSharing(tasks, **kwargs)  # type: ignore[arg-type]
