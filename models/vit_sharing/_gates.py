"""Hard-concrete gates (Louizos et al. 2018) and the gated weight deltas of a sub-task."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = ["GatedDelta", "HardConcreteGate", "LINEARS", "STRETCH", "TEMPERATURE", "TaskDeltas"]

#: The stretch interval (l, r) of the hard-concrete distribution.
STRETCH: tuple[float, float] = (-1.5, 1.5)
#: The temperature β of the concrete relaxation.
TEMPERATURE: float = 2.0 / 3.0
#: The gated linear layers of a timm ViT block, by their attribute name.
LINEARS: tuple[str, ...] = ("qkv", "proj", "fc1", "fc2")


class HardConcreteGate(nn.Module):
    """A gate ``z ∈ [0, 1]`` per element of a weight tensor.

    ``log α = log α_elem + log α_tensor``: a per-element and a per-tensor log-α, added in
    log space (the tensor-level α multiplies every element's α).  The per-element one
    starts at ``init_log_alpha`` (5: every gate open), the per-tensor one at 0 so the
    combined log-α starts at 5 too.
    """

    def __init__(
        self,
        shape: Sequence[int],
        init_log_alpha: float = 5.0,
        stretch: tuple[float, float] = STRETCH,
        temperature: float = TEMPERATURE,
    ) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(tuple(shape), init_log_alpha))
        # Shape (1,), not (): DeepSpeed broadcasts parameters as bytes, which 0-d refuses.
        self.tensor_log_alpha = nn.Parameter(torch.zeros(1))
        self.stretch = stretch
        self.temperature = temperature

    def combined_log_alpha(self) -> torch.Tensor:
        return self.log_alpha + self.tensor_log_alpha

    def _stretched(self, s: torch.Tensor) -> torch.Tensor:
        low, high = self.stretch
        return (s * (high - low) + low).clamp(0.0, 1.0)

    def sample(self) -> torch.Tensor:
        """``clamp(sigmoid((log u − log(1−u) + log α)/β)·(r−l) + l, 0, 1)``, u ~ U(0, 1)."""
        log_alpha = self.combined_log_alpha()
        # Keep u away from 0 and 1, where log u or log(1 − u) is infinite.
        u = torch.rand_like(log_alpha).clamp(1e-6, 1.0 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.temperature)
        return self._stretched(s)

    def deterministic(self) -> torch.Tensor:
        """``clamp(sigmoid(log α)·(r−l) + l, 0, 1)``: the gate at inference."""
        return self._stretched(torch.sigmoid(self.combined_log_alpha()))

    def forward(self) -> torch.Tensor:
        return self.sample() if self.training else self.deterministic()

    def l0(self) -> torch.Tensor:
        """Expected number of open gates, ``Σ sigmoid(log α − β log(−l/r))``."""
        low, high = self.stretch
        return torch.sigmoid(
            self.combined_log_alpha() - self.temperature * math.log(-low / high)
        ).sum()


class GatedDelta(nn.Module):
    """``ΔW`` of one linear layer for one sub-task, its gate, and the mask of steps 2-3.

    Until :meth:`fix_mask` the effective delta is ``z ⊙ ΔW``; afterwards ``m ⊙ ΔW`` with
    the fixed binary mask ``m = [z_eval > 0]``.  Fixing folds ``z_eval`` into ``ΔW``, so
    the sub-task's weights do not change at that moment and ``ΔW`` is exactly zero outside
    the mask; the product with ``m`` keeps it so (its gradient there is zero).
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(tuple(shape)))
        self.gate = HardConcreteGate(shape)
        self.register_buffer("mask", torch.ones(tuple(shape), dtype=torch.bool))
        self.register_buffer("masked", torch.tensor(False))

    def is_masked(self) -> bool:
        return bool(self.masked)

    def weight(self) -> torch.Tensor:
        """The effective ``z ⊙ ΔW`` (gates) or ``m ⊙ ΔW`` (fixed mask)."""
        if self.is_masked():
            return self.delta * self.mask
        return self.gate() * self.delta

    @torch.no_grad()
    def fix_mask(self) -> None:
        z = self.gate.deterministic()
        self.delta.mul_(z)
        self.mask.copy_(z > 0)
        self.masked.fill_(True)

    @torch.no_grad()
    def release_mask(self) -> None:
        self.mask.fill_(True)
        self.masked.fill_(False)


class TaskDeltas(nn.Module):
    """Every gated delta of one sub-task: ``blocks[i][name]`` for ``name`` in :data:`LINEARS`."""

    def __init__(self, shapes: Sequence[dict[str, Sequence[int]]]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.ModuleDict({name: GatedDelta(block[name]) for name in LINEARS}) for block in shapes
        )

    def gated(self) -> Iterator[GatedDelta]:
        for block in self.blocks:
            for name in LINEARS:
                yield block[name]

    def weights(self, index: int) -> dict[str, torch.Tensor]:
        """Block ``index``'s effective deltas (sampled gates in training mode)."""
        block = self.blocks[index]
        return {name: block[name].weight() for name in LINEARS}

    def l0(self) -> torch.Tensor:
        return torch.stack([d.gate.l0() for d in self.gated()]).sum()

    def delta_parameters(self) -> Iterator[nn.Parameter]:
        return (d.delta for d in self.gated())

    def gate_parameters(self) -> Iterator[nn.Parameter]:
        for d in self.gated():
            yield from d.gate.parameters()
