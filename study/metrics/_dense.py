"""Meters of the dense per-pixel tasks: segmentation, depth and surface normals."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from models.tasks import IGNORE_INDEX, Task
from study.metrics._meter import _F64, TaskMeter, _check_shape, _safe_div

__all__ = ["ANGLE_BIN_DEGREES", "DepthMeter", "NormalsMeter", "SemsegMeter"]


class SemsegMeter(TaskMeter):
    """Confusion matrix over non-ignored pixels → ``miou`` and ``pixel_acc``.

    Also the meter of ``human_parts`` (which reports ``miou`` only). ``miou`` averages
    the IoU of the classes present in the target or the prediction.
    """

    def _state_size(self) -> int:
        return self.task.channels**2

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k, name = self.task.channels, self.task.name
        if target.dim() != 3:
            raise ValueError(f"{name}: target must be (B, H, W), got {tuple(target.shape)}")
        _check_shape(name, pred, target.unsqueeze(1), k)
        labels = pred.argmax(dim=1)
        valid = target != IGNORE_INDEX
        index = target[valid].long() * k + labels[valid]
        if index.numel() and int(index.min()) < 0:
            raise ValueError(f"{name}: target has negative class ids (besides {IGNORE_INDEX})")
        counts = torch.bincount(index, minlength=k * k)
        # bincount grows past k*k exactly when a target id is ≥ k (and not the ignore id).
        if counts.numel() != k * k:
            raise ValueError(f"{name}: target has class ids ≥ {k} (besides {IGNORE_INDEX})")
        return counts.to(_F64)

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        k = self.task.channels
        # rows: target, cols: prediction; on the CPU, as the sums handed to _metrics are
        confusion = torch.tensor(sums, dtype=_F64, device="cpu").view(k, k)
        hits = confusion.diagonal()
        total = float(confusion.sum())
        union = confusion.sum(0) + confusion.sum(1) - hits
        present = union > 0  # classes in the target or the prediction
        miou = float((hits[present] / union[present]).mean()) if present.any() else math.nan
        return {"miou": miou, "pixel_acc": _safe_div(float(hits.sum()), total, math.nan)}


class DepthMeter(TaskMeter):
    """Over pixels with target > 0: ``rmse``, ``abs_rel``, ``log_rmse``, ``delta1..3``.

    ``log_rmse`` is the RMSE of natural logs; ``delta<i>`` is the fraction of pixels with
    max(p/t, t/p) < 1.25^i (Eigen et al. 2014). A non-positive prediction has no ratio or
    log, so it is clamped to 1e-6 m for those (it then fails every δ and has a huge log error).

    No depth cap by default: every labelled pixel counts, however far. ``max_depth`` (metres,
    e.g. 10 for NYUD) leaves out the pixels whose target is beyond it; predictions are
    scored as they are, not clipped to it.
    """

    def __init__(self, task: Task, max_depth: float | None = None) -> None:
        if max_depth is not None and not max_depth > 0:
            raise ValueError(f"depth: max_depth must be > 0 metres, got {max_depth}")
        super().__init__(task)
        self.max_depth = max_depth

    def _state_size(self) -> int:
        # squared error, relative error, squared log error, counts under 1.25^1..3, valid pixels
        return 7

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("depth", pred, target, 1)
        valid = target > 0
        if self.max_depth is not None:
            valid &= target <= self.max_depth
        p = pred[valid].to(_F64)
        t = target[valid].to(_F64)
        clamped = p.clamp(min=1e-6)  # a ratio with a non-positive prediction is meaningless
        ratio = torch.maximum(clamped / t, t / clamped)
        return torch.stack(
            [
                ((p - t) ** 2).sum(),
                ((p - t).abs() / t).sum(),
                ((clamped.log() - t.log()) ** 2).sum(),
                *((ratio < 1.25**i).sum().to(_F64) for i in (1, 2, 3)),
                torch.tensor(float(p.numel()), dtype=_F64, device=p.device),
            ]
        )

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        squared, relative, squared_log, within1, within2, within3, count = sums
        return {
            "rmse": math.sqrt(_safe_div(squared, count, math.nan)),
            "abs_rel": _safe_div(relative, count, math.nan),
            "log_rmse": math.sqrt(_safe_div(squared_log, count, math.nan)),
            "delta1": _safe_div(within1, count, math.nan),
            "delta2": _safe_div(within2, count, math.nan),
            "delta3": _safe_div(within3, count, math.nan),
        }


# Median angle resolution: a histogram of 0.01° bins over [0°, 180°]; the median is read off
# as the centre of the bin holding the middle angle (the mean of the two middle bins' centres
# for an even count), so it is within half a bin, 0.005°, of the exact median.
ANGLE_BIN_DEGREES = 0.01
_ANGLE_BINS = 18000  # 180° / 0.01°
_NORMALS_THRESHOLDS = (11.25, 22.5, 30.0)


class NormalsMeter(TaskMeter):
    """Angle (degrees) between normalised prediction and target, over non-zero targets.

    ``mean_angle``, ``median_angle`` (streaming, from a fixed histogram of
    :data:`ANGLE_BIN_DEGREES` bins) and ``within_11_25`` / ``within_22_5`` / ``within_30``,
    the fractions (in [0, 1], not percent) of pixels with an angle below 11.25°, 22.5°, 30°.
    """

    def _state_size(self) -> int:
        # sum of angles, counts under each threshold, valid pixels, then the angle histogram
        return 2 + len(_NORMALS_THRESHOLDS) + _ANGLE_BINS

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("normals", pred, target, 3)
        valid = target.abs().sum(dim=1) > 0  # (B, H, W)
        # (N, 3) vectors of valid pixels; float64 because acos is ill-conditioned near 0°.
        p = F.normalize(pred.movedim(1, -1)[valid].to(_F64), dim=-1)
        t = F.normalize(target.movedim(1, -1)[valid].to(_F64), dim=-1)
        angle = torch.rad2deg(torch.acos((p * t).sum(-1).clamp(-1.0, 1.0)))
        bins = (angle / ANGLE_BIN_DEGREES).long().clamp(0, _ANGLE_BINS - 1)
        histogram = torch.bincount(bins, minlength=_ANGLE_BINS).to(_F64)
        head = torch.stack(
            [
                angle.sum(),
                *((angle < limit).sum().to(_F64) for limit in _NORMALS_THRESHOLDS),
                torch.tensor(float(angle.numel()), dtype=_F64, device=angle.device),
            ]
        )
        return torch.cat([head, histogram])

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        total, within11, within22, within30, count = sums[:5]
        return {
            "mean_angle": _safe_div(total, count, math.nan),
            "median_angle": _histogram_median(sums[5:]),
            "within_11_25": _safe_div(within11, count, math.nan),
            "within_22_5": _safe_div(within22, count, math.nan),
            "within_30": _safe_div(within30, count, math.nan),
        }


def _histogram_median(histogram: list[float]) -> float:
    """The median of values binned at :data:`ANGLE_BIN_DEGREES`, as bin centres; NaN if empty."""
    cumulative = torch.tensor(histogram, dtype=_F64, device="cpu").cumsum(0)
    n = int(round(float(cumulative[-1])))
    if n == 0:
        return math.nan
    # 1-based ranks of the middle value(s): equal for odd n, adjacent for even n.
    ranks = torch.tensor([(n + 1) // 2, n // 2 + 1], dtype=_F64, device="cpu")
    bins = torch.searchsorted(cumulative, ranks)  # first bin whose cumulative count ≥ rank
    return float(((bins.to(_F64) + 0.5) * ANGLE_BIN_DEGREES).mean())
