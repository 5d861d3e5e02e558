"""Temporal deltas for video: a frame's activations against a neighbouring frame's.

Shoouri et al. extend computation sharing to video (arXiv 2303.09663, Fig. 2): besides
the *delta task activation* ``δX`` (a sub-task against the base task on the same frame)
every layer has a *delta temporal activation* ``ΔX`` (a task at time t + 1 against
itself at t).  A keyframe is shared across tasks as a still image is.  On a non-keyframe
the base task starts from its activations of the previous frame and computes only what
changed, then passes its activations to the sub-tasks for blocks ``[1, l]``; from block
``l + 1`` on the sub-tasks too reuse their own activations of the previous frame.

Training: :func:`temporal_l1` is ``Σ|a(frame) − a(neighbour)|`` per delta point for one
task, through the code of the delta-activation L1 (:class:`DeltaTap`, with the
neighbour's pass as the reference instead of the base pass).  Both frames use one draw of
the gates, so a neighbour equal to its frame costs exactly zero; the neighbour's pass is
the reference and carries no gradient, as the base pass does for ``δ``.

Inference is emulated densely, as eval-mode ``forward`` emulates task sharing: at every
point of a non-keyframe a task passes on ``a_ref + hardshrink(a − a_ref, thr)``, where the
reference is its own previous frame (``temporal_threshold``) or, for a sub-task's first
``task_blocks`` blocks, the base task on this frame (``delta_threshold``).  What is
passed on is also what the next frame compares with, so an entry that stays under its
threshold keeps its old value and the error does not drift.

:class:`DeltaWork` counts the delta work of such a pass as the sharing path
(:func:`~models.vit_sharing._sharing.sub_features`) counts its own: ``2·nnz(δ_in)·out``
per linear, ``4·N²·d_head`` per recomputed (image, head); ``_cost.temporal_report`` adds
``2·nnz(z⊙ΔW)·tokens`` for a sub-task and the decoder.  No sparse kernel runs the
temporal path: its compute is counted, not measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from models.vit_sharing._layers import DeltaTap, Recorder, Tap, block_forward
from models.vit_sharing._sharing import SharingStats

if TYPE_CHECKING:
    from models.vit_sharing._model import ViTSharing

__all__ = [
    "DeltaWork",
    "FrameTrace",
    "frame_pass",
    "temporal_l1",
    "temporal_penalty",
]

#: The linear each point feeds: its kept deltas are that linear's sparse input.
_FEEDS = {"norm1": "qkv", "attn": "proj", "norm2": "fc1", "act": "fc2"}


@dataclass
class DeltaWork(SharingStats):
    """Kept deltas per point and the FLOPs of the work they cause, counted as the sharing
    path counts them (the ``z⊙ΔW`` products, which do not depend on the deltas, apart)."""

    outputs: dict[str, int] = field(default_factory=dict)
    num_heads: int = 1

    @classmethod
    def of(cls, model: ViTSharing) -> DeltaWork:
        block = model.encoder.blocks[0]
        outputs = {
            "qkv": block.attn.qkv.out_features,
            "proj": block.attn.proj.out_features,
            "fc1": block.mlp.fc1.out_features,
            "fc2": block.mlp.fc2.out_features,
        }
        return cls(outputs=outputs, num_heads=block.attn.num_heads)

    def record(self, point: str, delta: torch.Tensor) -> None:
        before = self.kept[point]
        super().record(point, delta)
        nnz = self.kept[point] - before
        if point in _FEEDS:
            self.flops += 2.0 * nnz * self.outputs[_FEEDS[point]]
        if point == "qkv":
            # Softmax attention is recomputed for every (image, head) whose q, k or v moved.
            b, n, c3 = delta.shape
            head_dim = c3 // (3 * self.num_heads)
            moved = delta.view(b, n, 3, self.num_heads, head_dim).abs().amax(dim=(1, 2, 4)) > 0
            self.flops += 4.0 * int(moved.sum()) * n * n * head_dim

    def density(self, point: str | None = None) -> float:
        """Fraction of deltas kept at ``point`` (all points: None); NaN where none was seen."""
        kept = sum(self.kept.values()) if point is None else self.kept[point]
        total = sum(self.total.values()) if point is None else self.total[point]
        return kept / total if total else math.nan


@dataclass
class FrameTrace:
    """What a frame leaves for the next: per task, every block's passed-on points."""

    blocks: dict[str, list[dict[str, torch.Tensor]]]


class _Recording:
    """Runs ``inner`` and keeps what it passes on (detached): the next frame's reference."""

    def __init__(self, block_input: torch.Tensor, inner: Tap) -> None:
        self.recorder = Recorder(block_input)
        self.inner = inner

    def __call__(self, point: str, a: torch.Tensor) -> torch.Tensor:
        return self.recorder(point, self.inner(point, a))


def _weights(model: ViTSharing, task: str) -> list[dict[str, torch.Tensor] | None]:
    """Each block's effective ``z⊙ΔW`` of ``task`` (None: the base task), drawn once."""
    if task == model.base_task:
        return [None] * len(model.encoder.blocks)
    deltas = model.deltas[task]
    return [deltas.weights(i) for i in range(len(model.encoder.blocks))]  # type: ignore[operator]


def _pass(
    model: ViTSharing,
    tokens: torch.Tensor,
    weights: Sequence[Mapping[str, torch.Tensor] | None],
    taps: Sequence[Tap | None],
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The encoder blocks, each with its tap (None: none), keeping what they pass on."""
    traces = []
    h = tokens
    for block, w, tap in zip(model.encoder.blocks, weights, taps, strict=True):
        recording = _Recording(h, tap if tap is not None else _identity)
        h = block_forward(block, h, w, recording)
        traces.append(recording.recorder.trace)
    return h, traces


def _identity(point: str, a: torch.Tensor) -> torch.Tensor:
    return a


def temporal_l1(
    model: ViTSharing, task: str, frames: torch.Tensor, neighbours: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``Σ|a(frames) − a(neighbours)|`` per point (summed over blocks and the batch) of
    ``task``'s encoder, with gradient through the frames' pass only."""
    if task not in model.tasks:
        raise KeyError(f"unknown task {task!r}; the model has {list(model.tasks)}")
    if frames.shape != neighbours.shape:
        raise ValueError(
            f"neighbouring frames of shape {tuple(neighbours.shape)} do not match the frames' "
            f"{tuple(frames.shape)}"
        )
    weights = _weights(model, task)
    blocks = len(model.encoder.blocks)
    with torch.no_grad():
        _, reference = _pass(model, model.embed(neighbours), weights, [None] * blocks)
    l1: dict[str, torch.Tensor] = {}
    h = model.embed(frames)
    for block, w, ref in zip(model.encoder.blocks, weights, reference, strict=True):
        h = block_forward(block, h, w, DeltaTap(ref, l1, None))
    return l1


def temporal_penalty(
    model: ViTSharing, frames: torch.Tensor, neighbours: torch.Tensor, tasks: Sequence[str]
) -> torch.Tensor:
    """``Σ_point w_point·Σ|a(frame) − a(neighbour)|`` of the task a stage trains (every
    task among ``tasks`` when no stage is set); zero while every weight is zero."""
    total = torch.zeros((), device=frames.device)
    if not model.temporal:
        return total
    trained = tasks if model.stage is None else [t for t in tasks if t == model.stage[0]]
    for task in trained:
        l1 = temporal_l1(model, task, frames, neighbours)
        total = total + sum(model.temporal_l1_weight[p] * v for p, v in l1.items())
    return total


def frame_pass(
    model: ViTSharing,
    x: torch.Tensor,
    previous: FrameTrace | None,
    tasks: Sequence[str],
    task_blocks: int = 0,
    work: dict[str, dict[str, DeltaWork]] | None = None,
) -> tuple[dict[str, torch.Tensor], FrameTrace]:
    """Eval-mode encoder outputs (before the final norm) of the base task and ``tasks`` on
    ``x``, a keyframe (``previous`` None) or the frame after ``previous``; and the trace
    the next frame starts from.  ``work[task]`` (if given) collects the kept deltas and
    their FLOPs, under ``temporal`` and ``task`` (a sub-task's first ``task_blocks``)."""
    blocks = len(model.encoder.blocks)
    if not 0 <= task_blocks <= blocks:
        raise ValueError(f"task_blocks must lie in [0, {blocks}], got {task_blocks}")
    subs = [t for t in tasks if t != model.base_task]
    if previous is not None:
        missing = [t for t in (model.base_task, *subs) if t not in previous.blocks]
        if missing:
            raise ValueError(f"the previous frame's trace has no {missing}; run them on it")

    def counter(task: str, kind: str) -> DeltaWork | None:
        if work is None:
            return None
        return work.setdefault(task, {}).setdefault(kind, DeltaWork.of(model))

    tokens = model.embed(x)
    # The base task: a keyframe in full; otherwise its temporal deltas on every block.
    base_taps: list[Tap | None] = [None] * blocks
    if previous is not None:
        kept = counter(model.base_task, "temporal")
        base_taps = [
            DeltaTap(ref, None, model.temporal_threshold, kept=kept)
            for ref in previous.blocks[model.base_task]
        ]
    outputs: dict[str, torch.Tensor] = {}
    traces: dict[str, list[dict[str, torch.Tensor]]] = {}
    outputs[model.base_task], traces[model.base_task] = _pass(
        model, tokens, [None] * blocks, base_taps
    )
    for task in subs:
        # A keyframe's sub-task takes task deltas from the base on every block.
        shared = blocks if previous is None else task_blocks
        taps: list[Tap | None] = [
            DeltaTap(ref, None, model.delta_threshold, kept=counter(task, "task"))
            for ref in traces[model.base_task][:shared]
        ]
        if previous is not None:
            kept = counter(task, "temporal")
            taps += [
                DeltaTap(ref, None, model.temporal_threshold, kept=kept)
                for ref in previous.blocks[task][shared:]
            ]
        outputs[task], traces[task] = _pass(model, tokens, _weights(model, task), taps)
    return outputs, FrameTrace(traces)
