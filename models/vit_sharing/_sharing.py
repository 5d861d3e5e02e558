"""The sharing inference path: one base pass, then each sub-task's sparse delta work.

For a linear ``y = W a`` the sub-task computes ``δy = W_base δa + (z⊙ΔW) a_sub`` with
``a_sub = a_base + δa``: the first product reads only the non-zero entries of the
thresholded ``δa``, the second only the non-zeros of ``z⊙ΔW`` (built once in a
:class:`SharingPlan`).  Both are row-sparse products: an output row is the weighted sum
of the dense rows its non-zeros pick, which ``embedding_bag`` computes (on the CPU about
twice as fast as a CSR ``addmm`` at 10 % density).  Nonlinear parts cannot be updated
incrementally; they are recomputed on ``a_base + δ`` and compared with the base value
(see the package docstring for which ones, at what cost).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.vit_sharing._gates import LINEARS, TaskDeltas
from models.vit_sharing._layers import POINTS, base_pass, linear_of

__all__ = [
    "BaseTrace",
    "SharingPlan",
    "SharingStats",
    "SparseRows",
    "base_trace",
    "build_plan",
    "sparse_rows",
    "sub_features",
]


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
    ``deltas[task][i][name]`` the sparse rows of ``z⊙ΔW`` at inference, None where it is
    all zero.
    """

    base_t: list[dict[str, torch.Tensor]]
    deltas: dict[str, list[dict[str, SparseRows | None]]]


@dataclass
class SharingStats:
    """Kept (non-zero after thresholding) and total entries per point; delta-work FLOPs."""

    kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POINTS, 0))
    total: dict[str, int] = field(default_factory=lambda: dict.fromkeys(POINTS, 0))
    flops: float = 0.0

    def record(self, point: str, delta: torch.Tensor) -> None:
        self.kept[point] += int(torch.count_nonzero(delta))
        self.total[point] += delta.numel()


@dataclass(frozen=True)
class SparseRows:
    """The non-zeros of a 2-D matrix, row by row (CSR as ``embedding_bag`` takes it)."""

    columns: torch.Tensor  # int64, one per non-zero
    offsets: torch.Tensor  # int64, rows + 1: row r's non-zeros are offsets[r]:offsets[r+1]
    values: torch.Tensor

    @property
    def nnz(self) -> int:
        return self.values.numel()

    def times(self, table: torch.Tensor) -> torch.Tensor:
        """``self @ table`` (``rows × table.shape[1]``), reading only the picked rows."""
        return F.embedding_bag(
            self.columns,
            table,
            self.offsets,
            mode="sum",
            per_sample_weights=self.values,
            include_last_offset=True,
        )


def _flat_nonzero(flat: torch.Tensor) -> torch.Tensor:
    if flat.device.type == "cpu":  # numpy's bool scan is about 3x torch.nonzero's on CPU
        return torch.from_numpy(np.flatnonzero((flat != 0).numpy()))
    return flat.nonzero().squeeze(1)


def sparse_rows(dense: torch.Tensor) -> SparseRows:
    rows, cols = dense.shape
    flat = dense.reshape(-1)
    index = _flat_nonzero(flat).to(flat.device)
    bounds = torch.arange(0, rows * cols + 1, cols, device=flat.device)
    return SparseRows(index % cols, torch.searchsorted(index, bounds), flat[index])


@torch.no_grad()
def build_plan(encoder: nn.Module, deltas: Mapping[str, TaskDeltas]) -> SharingPlan:
    """Transposed base weights and each sub-task's sparse deltas (gates as they are now)."""
    base_t = [
        {name: linear_of(block, name).weight.t().contiguous() for name in LINEARS}
        for block in encoder.blocks
    ]
    sparse: dict[str, list[dict[str, SparseRows | None]]] = {}
    for task, task_deltas in deltas.items():
        sparse[task] = []
        for i in range(len(encoder.blocks)):
            rows = {name: sparse_rows(w) for name, w in task_deltas.weights(i).items()}
            sparse[task].append({n: r if r.nnz else None for n, r in rows.items()})
    return SharingPlan(base_t, sparse)


@torch.no_grad()
def base_trace(encoder: nn.Module, tokens: torch.Tensor) -> BaseTrace:
    x, blocks = base_pass(encoder.blocks, tokens)
    return BaseTrace(tokens, blocks, x, encoder.norm(x))


def _delta_linear(
    d_in: torch.Tensor,
    a_base: torch.Tensor,
    base_t: torch.Tensor,
    delta: SparseRows | None,
    stats: SharingStats | None,
) -> torch.Tensor:
    """``W_base δ_in + (z⊙ΔW)(a_base + δ_in)`` for ``(B, N, C)`` activations."""
    b, n, c = d_in.shape
    d_rows = sparse_rows(d_in.reshape(b * n, c))
    if d_rows.nnz:
        out = d_rows.times(base_t)
    else:
        out = d_in.new_zeros(b * n, base_t.shape[1])
    if delta is not None:
        # (z⊙ΔW) a_subᵀ: the delta's rows pick rows of a_subᵀ; transposing back is cheap.
        a_sub_t = (a_base + d_in).reshape(b * n, c).t().contiguous()
        out.add_(delta.times(a_sub_t).t())
    if stats is not None:
        stats.flops += 2.0 * d_rows.nnz * base_t.shape[1]
        stats.flops += 2.0 * (delta.nnz if delta is not None else 0) * b * n
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
    deltas: list[dict[str, SparseRows | None]],
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
