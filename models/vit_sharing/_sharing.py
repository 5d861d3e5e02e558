"""The sharing inference path: one base pass, then each sub-task's sparse delta work.

For a linear ``y = W a`` the sub-task computes ``δy = W_base δa + (z⊙ΔW) a_sub`` with
``a_sub = a_base + δa``: the first product reads only the non-zero entries of the
thresholded ``δa`` (a CSR matrix), the second only the non-zeros of ``z⊙ΔW`` (CSR,
built once in a :class:`SharingPlan`).  Nonlinear parts cannot be updated incrementally;
they are recomputed on ``a_base + δ`` and compared with the base value (see the package
docstring for which ones, at what cost).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from models.vit_sharing._gates import LINEARS, TaskDeltas
from models.vit_sharing._layers import POINTS, base_pass, linear_of

__all__ = ["BaseTrace", "SharingPlan", "SharingStats", "base_trace", "build_plan", "sub_features"]

# torch warns once per process that CSR support is "beta"; the ops used here are stable.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support", category=UserWarning)


@dataclass
class BaseTrace:
    """The base pass: every block's input and delta points, the last block's output and
    the normalised features."""

    tokens: torch.Tensor
    blocks: list[dict[str, torch.Tensor]]
    output: torch.Tensor
    features: torch.Tensor


@dataclass
class SharingPlan:
    """Weights the sharing path reuses across calls (a deployment step, like merging).

    ``base_t[i][name]`` is block ``i``'s base weight transposed (contiguous);
    ``deltas[task][i][name]`` the CSR ``z⊙ΔW`` at inference, None where it is all zero.
    """

    base_t: list[dict[str, torch.Tensor]]
    deltas: dict[str, list[dict[str, torch.Tensor | None]]]


@dataclass
class SharingStats:
    """Kept (non-zero after thresholding) and total entries per point; delta-work FLOPs."""

    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POINTS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POINTS, 0))
    flops: float = 0.0

    def record(self, point: str, delta: torch.Tensor) -> None:
        self.kept[point] += int(torch.count_nonzero(delta))
        self.total[point] += delta.numel()


def _csr(dense: torch.Tensor) -> torch.Tensor:
    """A 2-D tensor as CSR with int32 indices (what MKL takes without a conversion);
    faster than ``Tensor.to_sparse_csr`` on CPU."""
    rows, cols = dense.shape
    flat = dense.reshape(-1)
    index = flat.nonzero().squeeze(1)
    bounds = torch.arange(0, rows * cols + 1, cols, device=dense.device)
    crow = torch.searchsorted(index, bounds, out_int32=True)
    columns = (index % cols).to(torch.int32)
    return torch.sparse_csr_tensor(crow, columns, flat[index], (rows, cols), check_invariants=False)


@torch.no_grad()
def build_plan(encoder: nn.Module, deltas: Mapping[str, TaskDeltas]) -> SharingPlan:
    """Transposed base weights and each sub-task's CSR deltas (gates as they are now)."""
    base_t = [
        {name: linear_of(block, name).weight.t().contiguous() for name in LINEARS}
        for block in encoder.blocks
    ]
    sparse: dict[str, list[dict[str, torch.Tensor | None]]] = {}
    for task, task_deltas in deltas.items():
        sparse[task] = []
        for i in range(len(encoder.blocks)):
            csr = {name: _csr(w) for name, w in task_deltas.weights(i).items()}
            sparse[task].append({n: c if c.values().numel() else None for n, c in csr.items()})
    return SharingPlan(base_t, sparse)


@torch.no_grad()
def base_trace(encoder: nn.Module, tokens: torch.Tensor) -> BaseTrace:
    x, blocks = base_pass(encoder.blocks, tokens)
    return BaseTrace(tokens, blocks, x, encoder.norm(x))


def _delta_linear(
    d_in: torch.Tensor,
    a_base: torch.Tensor,
    base_t: torch.Tensor,
    delta: torch.Tensor | None,
    stats: SharingStats | None,
) -> torch.Tensor:
    """``W_base δ_in + (z⊙ΔW)(a_base + δ_in)`` for ``(B, N, C)`` activations."""
    b, n, c = d_in.shape
    out = d_in.new_zeros(b * n, base_t.shape[1])
    sparse_in = _csr(d_in.reshape(b * n, c))
    nnz = sparse_in.values().numel()
    if nnz:
        out.addmm_(sparse_in, base_t)  # in place: no copy of the output
    if delta is not None:
        # CSR × row-major dense is MKL's fast case; the transposed add is cheap next to it.
        a_sub_t = (a_base + d_in).reshape(b * n, c).t().contiguous()
        out.add_(out.new_zeros(base_t.shape[1], b * n).addmm_(delta, a_sub_t).t())
    if stats is not None:
        stats.flops += 2.0 * nnz * base_t.shape[1]
        stats.flops += 2.0 * (delta.values().numel() if delta is not None else 0) * b * n
    return out.view(b, n, -1)


def _attention_delta(
    qkv_base: torch.Tensor,
    d_qkv: torch.Tensor,
    ctx_base: torch.Tensor,
    num_heads: int,
    stats: SharingStats | None,
) -> torch.Tensor:
    """Recompute softmax attention for the (image, head) pairs whose q, k or v changed."""
    b, n, c3 = qkv_base.shape
    hd = c3 // (3 * num_heads)
    heads = d_qkv.view(b, n, 3, num_heads, hd).abs().amax(dim=(1, 2, 4)) > 0  # (B, H)
    d_ctx = torch.zeros_like(ctx_base)
    count = int(heads.sum())
    if count == 0:
        return d_ctx
    q, k, v = (qkv_base + d_qkv).view(b, n, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
    if count == b * num_heads:
        ctx = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c3 // 3)
        d_ctx = ctx - ctx_base
    else:
        ctx = F.scaled_dot_product_attention(q[heads], k[heads], v[heads])  # (count, N, hd)
        per_head = ctx_base.view(b, n, num_heads, hd).transpose(1, 2)
        d_heads = d_ctx.view(b, n, num_heads, hd).transpose(1, 2)
        d_heads[heads] = ctx - per_head[heads]
    if stats is not None:
        stats.flops += 4.0 * count * n * n * hd
    return d_ctx


def _shrink(
    point: str, delta: torch.Tensor, thresholds: Mapping[str, float], stats: SharingStats | None
) -> torch.Tensor:
    kept = F.hardshrink(delta, thresholds[point])
    if stats is not None:
        stats.record(point, kept)
    return kept


@torch.no_grad()
def sub_features(
    encoder: nn.Module,
    trace: BaseTrace,
    deltas: list[dict[str, torch.Tensor | None]],
    base_t: list[dict[str, torch.Tensor]],
    thresholds: Mapping[str, float],
    stats: SharingStats | None = None,
) -> torch.Tensor:
    """A sub-task's normalised encoder output from the base trace and its sparse deltas.

    ``dx`` is the residual stream's delta (a sum of thresholded deltas).  Its LayerNorms
    and the GELU are recomputed on every entry (``norm(x_base + dx) − norm_base``), which
    is exactly zero wherever their input delta is zero.
    """
    dx = torch.zeros_like(trace.tokens)
    for block, base, delta, wt in zip(encoder.blocks, trace.blocks, deltas, base_t, strict=True):
        attn, mlp = block.attn, block.mlp
        x_in = base["input"]
        d = _shrink("norm1", block.norm1(x_in + dx) - base["norm1"], thresholds, stats)
        d = _delta_linear(d, base["norm1"], wt["qkv"], delta["qkv"], stats)
        d = _shrink("qkv", d, thresholds, stats)
        d = _attention_delta(base["qkv"], d, base["attn"], attn.num_heads, stats)
        d = _shrink("attn", d, thresholds, stats)
        d = _delta_linear(d, base["attn"], wt["proj"], delta["proj"], stats)
        d = _shrink("proj", d, thresholds, stats)
        dx = dx + block.ls1(d)
        x_mid = x_in + block.ls1(base["proj"])  # as block_forward computes it
        d = _shrink("norm2", block.norm2(x_mid + dx) - base["norm2"], thresholds, stats)
        d = _delta_linear(d, base["norm2"], wt["fc1"], delta["fc1"], stats)
        d = _shrink("fc1", d, thresholds, stats)
        d = _shrink("act", mlp.act(base["fc1"] + d) - base["act"], thresholds, stats)
        d = _delta_linear(d, base["act"], wt["fc2"], delta["fc2"], stats)
        d = _shrink("fc2", d, thresholds, stats)
        dx = dx + block.ls2(d)
    return encoder.norm(trace.output + dx)
