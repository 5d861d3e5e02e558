"""Compute accounting: delta densities, stored parameters and GFLOPs per image.

FLOPs count multiply-adds as 2, matmuls and convolutions only (as
:func:`models._cost.count_gflops`); softmax attention, which FlopCounterMode does not see on
CPU, is added analytically (``4·N²·d`` per head) to both the dense and the sharing figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from models._cost import count_gflops, count_parameters
from models.vit_sharing._layers import POINTS, DeltaTap, base_pass, block_forward, identity_tap
from models.vit_sharing._sharing import SharingStats, sub_features
from models.vit_sharing._temporal import DeltaWork, frame_pass

if TYPE_CHECKING:
    from models.vit_sharing._model import ViTSharing

__all__ = [
    "attention_gflops",
    "calibrate_thresholds",
    "compute_report",
    "decoder_gflops",
    "delta_activation_density",
    "delta_weight_density",
    "dense_gflops",
    "patch_embed_gflops",
    "sharing_stats",
    "stored_parameters",
    "task_gflops",
    "temporal_report",
]


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _sub_task(model: ViTSharing, task: str) -> None:
    if task not in model.sub_tasks:
        raise ValueError(f"{task!r} is not a sub-task; the sub-tasks are {list(model.sub_tasks)}")


def _delta_nnz(model: ViTSharing, task: str) -> tuple[int, int]:
    nnz = total = 0
    with _evaluating(model):
        for gated in model.deltas[task].gated():  # type: ignore[operator]
            weight = gated.weight()
            nnz += int(torch.count_nonzero(weight))
            total += weight.numel()
    return nnz, total


def delta_weight_density(model: ViTSharing, task: str) -> float:
    """Fraction of non-zero ``z⊙ΔW`` entries (inference gates) over all gated linears."""
    _sub_task(model, task)
    nnz, total = _delta_nnz(model, task)
    return nnz / total


def sharing_stats(model: ViTSharing, task: str, x: torch.Tensor) -> SharingStats:
    """Kept delta entries per point and the delta-work FLOPs of ``task`` on batch ``x``."""
    _sub_task(model, task)
    stats = SharingStats()
    with _evaluating(model):
        trace = model.base_trace(x)
        plan = model.sharing_plan([task])
        sub_features(
            model.encoder, trace, plan.deltas[task], plan.base_t, model.delta_threshold, stats
        )
    return stats


def _densities(stats: SharingStats) -> dict[str, float]:
    out = {p: stats.kept[p] / stats.total[p] for p in POINTS}
    out["all"] = sum(stats.kept.values()) / sum(stats.total.values())
    return out


def delta_activation_density(model: ViTSharing, task: str, x: torch.Tensor) -> dict[str, float]:
    """Fraction of delta entries kept (``|δ| > threshold``) per point, and ``all`` of them."""
    return _densities(sharing_stats(model, task, x))


def calibrate_thresholds(
    model: ViTSharing, task: str, x: torch.Tensor, density: float, sweeps: int = 10
) -> dict[str, float]:
    """Set each point's threshold so that a fraction ``density`` of ``task``'s deltas is
    kept on ``x``.

    A point's threshold changes the deltas downstream of it, so the quantiles are taken
    again over a few sweeps; each sweep moves a threshold to the geometric mean of its
    old value and the new quantile, which damps the oscillation between sweeps.
    """
    _sub_task(model, task)
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    with _evaluating(model):
        tokens = model.embed(x)
        _, traces = base_pass(model.encoder.blocks, tokens)
        for _ in range(sweeps):
            magnitudes: dict[str, list[torch.Tensor]] = {}
            h = tokens
            for i, block in enumerate(model.encoder.blocks):
                tap = DeltaTap(traces[i], None, model.delta_threshold, magnitudes)
                h = block_forward(block, h, model.deltas[task].weights(i), tap)  # type: ignore[operator]
            for point, values in magnitudes.items():
                flat = torch.cat(values)
                # hardshrink keeps |δ| > thr: the k-th smallest leaves the rest above it.
                k = max(1, round(flat.numel() * (1.0 - density)))
                quantile = float(flat.kthvalue(k).values)
                old = model.delta_threshold[point]
                damped = math.sqrt(old * quantile) if old > 0 and quantile > 0 else quantile
                model.delta_threshold[point] = damped
    return dict(model.delta_threshold)


def stored_parameters(model: ViTSharing, task: str) -> int:
    """What deploying ``task`` adds: non-zero ``ΔW`` values and its decoder (a sub-task),
    or the encoder and decoder (the base task).  Gates, masks and the indices of the
    deltas' non-zeros are not counted."""
    decoder = count_parameters(model.decoders[task])
    if task == model.base_task:
        return count_parameters(model.encoder) + decoder
    return _delta_nnz(model, task)[0] + decoder


def decoder_gflops(model: ViTSharing, task: str) -> float:
    features = torch.zeros(1, model.encoder.embed_dim, *model.encoder.patch_embed.grid_size)
    size = (model.image_size, model.image_size)
    with _evaluating(model), FlopCounterMode(display=False) as counter:
        model.decoders[task](features, size)
    return counter.get_total_flops() / 1e9


def attention_gflops(model: ViTSharing) -> float:
    """Softmax attention of one image through every block (``QKᵀ`` and ``PV``)."""
    tokens = model.encoder.patch_embed.num_patches + model.encoder.num_prefix_tokens
    blocks = len(model.encoder.blocks)
    return blocks * 4.0 * tokens * tokens * model.encoder.embed_dim / 1e9


class _DenseTask(nn.Module):
    """One task as a plain single-task ViT: encoder (base weights) and its decoder."""

    def __init__(self, model: ViTSharing, task: str) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.decoder = model.decoders[task]
        self.embed = model.embed
        self.grid = model.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.encoder.blocks:
            h = block_forward(block, h, None, identity_tap)
        size = (x.shape[-2], x.shape[-1])
        return self.decoder(self.grid(self.encoder.norm(h)), size)


def dense_gflops(model: ViTSharing, task: str) -> float:
    """GFLOPs per image of a dense single-task ViT of the same size with ``task``'s head."""
    with _evaluating(model):
        # Built in eval mode: count_gflops restores the wrapper's mode on its modules.
        flops = count_gflops(_DenseTask(model, task).eval(), model.image_size)
    return flops + attention_gflops(model)


def task_gflops(model: ViTSharing, task: str, x: torch.Tensor) -> float:
    """GFLOPs per image ``task`` pays on top of the base pass (the base task: all of it)."""
    if task == model.base_task:
        return dense_gflops(model, task)
    stats = sharing_stats(model, task, x)
    return stats.flops / x.shape[0] / 1e9 + decoder_gflops(model, task)


def patch_embed_gflops(model: ViTSharing) -> float:
    """The patch embedding's convolution on one image."""
    proj = model.encoder.patch_embed.proj
    kernel = proj.in_channels * math.prod(proj.kernel_size)
    return 2.0 * kernel * proj.out_channels * model.encoder.patch_embed.num_patches / 1e9


def temporal_report(
    model: ViTSharing, x: torch.Tensor, previous: torch.Tensor, task_blocks: int = 0
) -> dict[str, dict[str, float]]:
    """Per task, ``x`` run as the frame after ``previous`` (a keyframe, one per image):
    the fraction of temporal deltas kept (all points and per point; NaN where a sub-task
    takes every block from the base) and the GFLOPs per image of that non-keyframe,
    decoder included, against a dense single-task ViT.

    The base task pays its patch embedding and temporal delta work; a sub-task its delta
    work (task deltas on its first ``task_blocks`` blocks, temporal after) and ``z⊙ΔW``.
    """
    if x.shape != previous.shape:
        raise ValueError(
            f"previous frames of shape {tuple(previous.shape)} do not match {tuple(x.shape)}"
        )
    work: dict[str, dict[str, DeltaWork]] = {}
    with _evaluating(model):
        _, keyframe = frame_pass(model, previous, None, model.tasks)
        frame_pass(model, x, keyframe, model.tasks, task_blocks, work)
    tokens = model.encoder.patch_embed.num_patches + model.encoder.num_prefix_tokens
    report: dict[str, dict[str, float]] = {}
    for task in model.tasks:
        counted = work.get(task, {})
        temporal = counted.get("temporal", DeltaWork.of(model))
        if task == model.base_task:
            gflops = patch_embed_gflops(model)
        else:
            gflops = 2.0 * _delta_nnz(model, task)[0] * tokens / 1e9
        gflops += sum(w.flops for w in counted.values()) / x.shape[0] / 1e9
        gflops += decoder_gflops(model, task)
        row = {"temporal_density": temporal.density()}
        row.update({f"temporal_density/{p}": temporal.density(p) for p in POINTS})
        row["temporal_gflops"] = gflops
        row["temporal_gflops_vs_dense"] = gflops / dense_gflops(model, task)
        report[task] = row
    return report


def compute_report(
    model: ViTSharing, x: torch.Tensor, neighbours: torch.Tensor | None = None
) -> dict[str, dict[str, float]]:
    """Per task: densities, stored parameters, GFLOPs with sharing and dense; with
    ``neighbours`` (the frames before ``x``) also :func:`temporal_report`'s figures."""
    report: dict[str, dict[str, float]] = {}
    for task in model.tasks:
        dense = dense_gflops(model, task)
        row = {"stored_parameters": float(stored_parameters(model, task)), "dense_gflops": dense}
        if task == model.base_task:
            row.update(weight_density=1.0, activation_density=1.0, gflops=dense)
        else:
            stats = sharing_stats(model, task, x)
            densities = _densities(stats)
            row["weight_density"] = delta_weight_density(model, task)
            row["activation_density"] = densities.pop("all")
            row.update({f"activation_density/{p}": v for p, v in densities.items()})
            row["gflops"] = stats.flops / x.shape[0] / 1e9 + decoder_gflops(model, task)
        row["gflops_vs_dense"] = row["gflops"] / dense
        report[task] = row
    if neighbours is not None:
        for task, temporal in temporal_report(model, x, neighbours).items():
            report[task].update(temporal)
    return report
