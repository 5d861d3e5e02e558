"""Meters of the binary-map tasks: edges (odsF with a matching tolerance) and saliency."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.tasks import IGNORE_INDEX, Task
from study.metrics._meter import _F64, TaskMeter, _check_shape, _safe_div

__all__ = ["EDGE_MAX_DIST", "EdgesMeter", "SaliencyMeter", "edge_tolerance"]


def _levels(logits: torch.Tensor, logit_thresholds: torch.Tensor) -> torch.Tensor:
    """How many thresholds each logit strictly exceeds (``bucketize`` with ``right=False``)."""
    return torch.bucketize(logits, logit_thresholds.to(logits.device), right=False)


def _logit_thresholds(steps: int) -> torch.Tensor:
    """Probabilities k/steps, k = 1..steps−1, as logits: sigmoid(x) > k/n ⇔ x > log(k/(n−k))."""
    # Made once per meter, before any batch says where the data lives; moved per batch.
    k = torch.arange(1, steps, dtype=_F64, device="cpu")
    return torch.log(k / (steps - k))


def _at_least(histogram: torch.Tensor) -> torch.Tensor:
    """Per row, counts with level ≥ k for k = 1..levels−1 (a reversed cumulative sum)."""
    return histogram.flip(-1).cumsum(-1).flip(-1)[..., 1:]


_EDGE_STEPS = 100  # thresholds k/100 for k = 1..99
EDGE_MAX_DIST = 0.0075  # SEISM / BSDS default matching distance, as a fraction of the diagonal


def edge_tolerance(height: int, width: int) -> int:
    """Default matching radius in pixels: ⌊0.0075 · image diagonal⌋, at least 1.

    0.0075 is the BSDS/SEISM ``maxDist`` used for PASCAL-Context (≈ 5 px at 512 × 512);
    small images (diagonal < 267 px, e.g. 64 × 64) get 1 px.
    """
    return max(1, math.floor(EDGE_MAX_DIST * math.hypot(height, width)))


class EdgesMeter(TaskMeter):
    """``odsf``: the F-measure at the best dataset-wide threshold (SEISM's ODS-F, approximated).

    For each threshold k/100 (k = 1..99) on sigmoid(logit) the state counts, over the whole
    dataset: predicted edge pixels, predicted edge pixels within ``tolerance`` pixels of a
    ground-truth edge (correct, for precision), and ground-truth edge pixels within
    ``tolerance`` pixels of a predicted edge (matched, for recall). "Within r pixels" is a
    (2r+1) × (2r+1) square window (Chebyshev distance, dilation by max-pooling); unlike the
    BSDS benchmark there is no one-to-one (bipartite) matching, so one predicted pixel may
    match several ground-truth pixels and vice versa, and there is no edge thinning. Then
    ODS-F = max over thresholds of 2PR / (P + R). Pixels marked 255 are neither predictions
    nor ground truth. ``tolerance`` defaults to :func:`edge_tolerance` of each batch's size.
    """

    def __init__(self, task: Task, tolerance: int | None = None) -> None:
        if tolerance is not None and tolerance < 0:
            raise ValueError(f"edges: tolerance must be ≥ 0 pixels, got {tolerance}")
        super().__init__(task)
        self.tolerance = tolerance
        self._logit_thresholds = _logit_thresholds(_EDGE_STEPS)

    def _state_size(self) -> int:
        # level histograms: predictions far from truth, near truth; truth by nearby prediction
        return 3 * _EDGE_STEPS

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("edges", pred, target, 1)
        if target.shape[1] != 1:
            raise ValueError(f"edges: target must be (B, 1, H, W), got {tuple(target.shape)}")
        r = self.tolerance if self.tolerance is not None else edge_tolerance(*pred.shape[-2:])
        valid = target != IGNORE_INDEX
        truth = (target > 0.5) & valid
        logits = pred.to(_F64).masked_fill(~valid, -math.inf)
        window = {"kernel_size": 2 * r + 1, "stride": 1, "padding": r}
        near_truth = F.max_pool2d(truth.to(_F64), **window) > 0
        # The strongest prediction within r of each pixel: a pixel is matched at threshold k
        # exactly when that maximum exceeds it (dilation commutes with thresholding).
        nearby_logit = F.max_pool2d(logits, **window)
        level = _levels(logits[valid], self._logit_thresholds)
        predictions = torch.bincount(
            near_truth[valid].long() * _EDGE_STEPS + level, minlength=2 * _EDGE_STEPS
        )
        matched = torch.bincount(
            _levels(nearby_logit[truth], self._logit_thresholds), minlength=_EDGE_STEPS
        )
        return torch.cat([predictions, matched]).to(_F64)

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        hist = torch.tensor(sums, dtype=_F64, device="cpu").view(3, _EDGE_STEPS)
        above = _at_least(hist)  # (3, 99): far, correct, matched at each threshold
        predicted, correct, matched = above[0] + above[1], above[1], above[2]
        truth = hist[2].sum()
        precision = torch.where(predicted > 0, correct / predicted.clamp(min=1), 0.0)
        recall = matched / truth if truth > 0 else torch.zeros_like(matched)
        both = precision + recall
        f = torch.where(both > 0, 2 * precision * recall / both.clamp(min=1e-300), 0.0)
        return {"odsf": float(f.max())}


_SALIENCY_STEPS = 20  # histogram levels of the probability grid k/20, k = 1..19
# max_f is taken over the thresholds 0.20, 0.25, ..., 0.90 (ASTMT, Maninis et al. 2019).
_SALIENCY_MAX_F_STEPS = range(4, 19)
_SALIENCY_BETA2 = 0.3


class SaliencyMeter(TaskMeter):
    """``max_f`` (β² = 0.3) over thresholds 0.20..0.90 and ``iou`` at 0.5, ignoring 255.

    The state is a histogram of how many of the thresholds k/20 (k = 1..19) each pixel's
    probability exceeds, split by ground truth, so every threshold's TP/FP/FN comes from
    40 numbers. F_β is computed from dataset-wide counts at each threshold.
    """

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self._logit_thresholds = _logit_thresholds(_SALIENCY_STEPS)

    def _state_size(self) -> int:
        return 2 * _SALIENCY_STEPS  # histogram for negatives, then for positives

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("saliency", pred, target, 1)
        valid = target != IGNORE_INDEX
        logits = pred[valid].to(_F64)
        truth = (target[valid] > 0.5).long()
        level = _levels(logits, self._logit_thresholds)  # in 0..19
        counts = torch.bincount(truth * _SALIENCY_STEPS + level, minlength=2 * _SALIENCY_STEPS)
        return counts.to(_F64)

    def _threshold_counts(self, sums: list[float]) -> tuple[torch.Tensor, ...]:
        """TP, FP, FN at each threshold k/20, k = 1..19."""
        hist = torch.tensor(sums, dtype=_F64, device="cpu").view(2, _SALIENCY_STEPS)
        above = _at_least(hist)
        tp, fp = above[1], above[0]
        fn = hist[1].sum() - tp
        return tp, fp, fn

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        tp, fp, fn = self._threshold_counts(sums)
        half = _SALIENCY_STEPS // 2 - 1  # index of k = 10, threshold 0.5
        iou = _safe_div(float(tp[half]), float(tp[half] + fp[half] + fn[half]), 0.0)
        b2 = _SALIENCY_BETA2
        den = (1 + b2) * tp + b2 * fn + fp
        f = torch.where(den > 0, (1 + b2) * tp / den.clamp(min=1e-300), torch.zeros_like(den))
        rows = torch.tensor([k - 1 for k in _SALIENCY_MAX_F_STEPS], device="cpu")
        return {"iou": iou, "max_f": float(f[rows].max())}
