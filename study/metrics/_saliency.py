"""The saliency meter: maxF and IoU from a histogram of thresholded probabilities."""

from __future__ import annotations

import torch

from models.tasks import IGNORE_INDEX, Task
from study.metrics._meter import _F64, TaskMeter, _check_shape, _safe_div

__all__ = ["SaliencyMeter"]


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
