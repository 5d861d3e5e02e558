"""Computation sharing between a base task and sub-tasks of one ViT (``vit_sharing``).

Shoouri et al., ICCV 2023, "Efficient Computation Sharing for Multi-Task Visual Scene
Understanding" (arXiv 2303.09663).  A base task (``semseg`` if present, else the first)
owns a full timm ViT encoder ``W_base``.  Every other task (a sub-task) reuses it with a
sparse weight delta on each block linear (``qkv``, ``proj``, ``fc1``, ``fc2``):

    W_sub = W_base + z ⊙ ΔW,   ΔW initialised to zero,

``z`` a hard-concrete gate per element (Louizos et al. 2018): per-element log-α (init 5)
plus a per-tensor log-α (init 0), added in log space; stretch ``(l, r) = (−1.5, 1.5)``,
temperature ``β = 2/3``; sampled in training, ``clamp(sigmoid(log α)(r − l) + l, 0, 1)``
at inference; ``L0 = Σ sigmoid(log α − β log(−l/r))`` (``log(−l/r) = 0`` here).  Because
sub-task activations stay close to the base task's, the sub-task computes only the
*delta activations* ``δ = a_sub − a_base``, penalised with L1 in training and thresholded
at inference, so its extra work scales with the non-zeros of ``δ`` and ``z ⊙ ΔW``.

Training, per sub-task, with :meth:`ViTSharing.set_stage` (everything else frozen; use a
fresh optimizer per stage and add ``model.penalty()`` to the loss):

* ``base`` – the base task's encoder and decoder.
* ``gates`` (step 1) – the sub-task's ``ΔW``, gates and decoder; penalty ``λ·L0``.
* ``masked`` (step 2) – the mask ``m = [z_eval > 0]`` is fixed (``z_eval`` is folded into
  ``ΔW``, so the function does not jump), gates frozen, ``W_sub = W_base + m ⊙ ΔW``;
  entries outside the mask are zero and get zero gradient.
* ``delta_act`` (step 3) – as step 2, penalty ``Σ_point w_point · Σ|δ_point|``.

Without a stage every parameter trains and every sub-task's ``λ·L0`` is the penalty.

Delta points (:data:`POINTS`) of every block, named after the module whose output they
are: ``norm1``, ``qkv``, ``attn`` (the attention context, ``proj``'s input), ``proj``,
``norm2``, ``fc1``, ``act`` (GELU) and ``fc2``.  In eval mode a sub-task passes on
``a_base + hardshrink(δ, thr_point)`` at each point: entries with ``|δ| ≤ thr`` take the
base value.  ``forward`` (dense, eval) and :meth:`ViTSharing.forward_shared` (sparse)
compute exactly this function, so they agree up to float rounding (in float32 a delta
within rounding of its threshold may be kept on one path and dropped on the other, which
moves an output by up to about that threshold; in float64 they agree to ~1e-15).

The sharing path (``forward_shared``): the base pass runs once and keeps every point.
Then per sub-task and block:

* linears – exact and sparse: ``δy = W_base δa + (z⊙ΔW)(a_base + δa)``, ``δa`` and
  ``z⊙ΔW`` as their non-zeros row by row (``SparseRows``, ``z⊙ΔW``'s built once by
  :meth:`ViTSharing.sharing_plan`), multiplied with ``embedding_bag``; FLOPs
  ``2·nnz(δa)·out + 2·nnz(z⊙ΔW)·tokens``.
* softmax attention – recomputed (dense ``SDPA``) for every (image, head) whose ``q``,
  ``k`` or ``v`` delta has a non-zero; skipped, with zero delta, otherwise.  One changed
  key changes every query's softmax row; an incremental (renormalised) update of only the
  changed scores is not implemented.
* LayerNorm and GELU – recomputed elementwise on ``base + δ`` for every entry and
  compared with the base value (exactly zero where the input delta is zero).  These are
  O(tokens·channels), not counted in FLOPs (as FlopCounterMode does not count them), but
  they do take wall time.

Video (``temporal_l1_weight``, default 0: off; :mod:`models.vit_sharing._temporal`): the
paper's delta *temporal* activations ``ΔX``, a task's activations on a frame against its
own on a neighbouring frame.  :meth:`ViTSharing.temporal_penalty` is
``Σ_point w_point·Σ|a(frame) − a(neighbour)|`` for the task the stage trains, through the
delta-L1 tap with the neighbour's pass as the reference (gradient through the frame only,
one gate draw for both).  :meth:`ViTSharing.forward_temporal` emulates a non-keyframe in
eval: the base task reuses its previous frame's activations where they moved by at most
``temporal_threshold``, a sub-task takes task deltas from the base for its first
``task_blocks`` blocks and temporal deltas after; :meth:`ViTSharing.temporal_report` (and
``compute_report(x, neighbours)``) counts the kept temporal deltas and the FLOPs that
non-keyframe would cost.  The temporal path is counted, not run with sparse kernels.

:meth:`ViTSharing.calibrate_thresholds` sets per-point thresholds for a target fraction of
kept deltas on a batch.  :meth:`ViTSharing.delta_activation_density` gives the kept
fraction per point (and ``all`` points together); :meth:`ViTSharing.compute_report` gives,
per task, the weight and activation densities, stored parameters and GFLOPs per image
with sharing (sub-task: only its delta work and decoder) against a dense ViT.

Speed (``study.bench.sharing``): the FLOPs of the delta work scale with the non-zeros, but
a row-sparse product on the CPU runs at about a third of dense GEMM's throughput (it
streams one weight row per non-zero and cannot block registers), and every point still
costs a few elementwise passes (threshold, finding the non-zeros, LayerNorm/GELU
recomputation) and the attention recomputation.  At the paper's sparsity (~5 % ``ΔW``,
~10 % ``δ``) the sharing path is about as fast as a dense merged ViT on CPU; it wins
clearly only at sparser deltas.

Deviations and choices:

* ``attn`` and ``norm2`` are delta points beyond the paper's (norm1, qkv, proj,
  fc1, act, fc2) so that the input of every linear is thresholded, hence sparse.
* Dropping uses ``hardshrink`` (kept where ``|δ| > thr``); ``|δ| = thr`` exactly is dropped.
* Only linear weights get deltas; biases, LayerNorms, patch and position embeddings are
  shared as they are.  One gate sample per forward is shared by the whole batch.
* The delta L1 is a sum over entries (the paper's tiny weights, 2.5e-10 by default).
* ``representation_module()``/``last_shared_module()`` return the encoder's final norm;
  ``forward`` calls it once on every asked task's tokens concatenated along the batch.
* A dense convolutional decoder per task (1×1 reduce, two [3×3 conv-BN-ReLU, ×2 up],
  1×1 predict, bilinear to the input) instead of the paper's heads.
* ``pretrained`` loads timm's published weights, which timm adapts to the image and
  patch size (position and patch embeddings resampled); ``pretrained_path`` loads the
  parameters of a file whose name and shape match (no resampling).
* Temporal deltas: the training form (an L1 against the neighbouring frame, the
  neighbour's pass detached, added in every stage for the stage's task) is this project's;
  the paper's Fig. 2 fixes the inference scheme (base temporal on every block, sub-tasks
  task deltas on ``[1, l]`` and temporal after), which ``forward_temporal`` emulates with
  ``l = task_blocks`` (default 0).  A non-keyframe's patch embedding is counted dense.
"""

from models.vit_sharing._cost import attention_gflops, decoder_gflops, sharing_stats
from models.vit_sharing._gates import (
    LINEARS,
    STRETCH,
    TEMPERATURE,
    GatedDelta,
    HardConcreteGate,
    TaskDeltas,
)
from models.vit_sharing._layers import POINTS, ConvDecoder, linear_of
from models.vit_sharing._model import BACKBONES, STEPS, ViTSharing, vit_sharing
from models.vit_sharing._sharing import BaseTrace, SharingPlan, SharingStats
from models.vit_sharing._temporal import DeltaWork, FrameTrace

__all__ = [
    "BACKBONES",
    "LINEARS",
    "POINTS",
    "STEPS",
    "STRETCH",
    "TEMPERATURE",
    "BaseTrace",
    "ConvDecoder",
    "DeltaWork",
    "FrameTrace",
    "GatedDelta",
    "HardConcreteGate",
    "SharingPlan",
    "SharingStats",
    "TaskDeltas",
    "ViTSharing",
    "attention_gflops",
    "decoder_gflops",
    "linear_of",
    "sharing_stats",
    "vit_sharing",
]
