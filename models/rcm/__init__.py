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

from models.rcm._layers import VARIANTS, RepConv
from models.rcm._model import RCMResNet, rcm_resnet, response_initialise

__all__ = ["VARIANTS", "RCMResNet", "RepConv", "rcm_resnet", "response_initialise"]
