"""Streaming, all-reducible metrics for the dense tasks of :mod:`models.tasks`, and Δm.

A meter never holds predictions: each ``update`` folds a batch into a fixed-size float64
vector of sums and counts (:meth:`TaskMeter.state`). Summing those vectors across
data-parallel ranks gives exactly what one process would get over all the data, so
:meth:`MultiTaskMeter.all_reduce` is one ``all_reduce(SUM)`` of one tensor.

Conventions when there is nothing to score: semseg, human_parts, depth and normals report
NaN when no pixel was valid; the binary scores (edges ``odsf``, saliency ``max_f`` and
``iou``) are 0 when undefined. Definitions and tolerances are in each meter's docstring.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.tasks import IGNORE_INDEX, Task

__all__ = [
    "ANGLE_BIN_DEGREES",
    "EDGE_MAX_DIST",
    "DepthMeter",
    "EdgesMeter",
    "MultiTaskMeter",
    "NormalsMeter",
    "SaliencyMeter",
    "SemsegMeter",
    "TaskMeter",
    "create_meter",
    "delta_m",
    "edge_tolerance",
]

_F64 = torch.float64


def _check_shape(task: str, pred: torch.Tensor, target: torch.Tensor, channels: int) -> None:
    """Dense tasks share (B, C, H, W) predictions and (B, C', H, W) targets."""
    if pred.dim() != 4 or pred.shape[1] != channels:
        raise ValueError(
            f"{task}: prediction must be (B, {channels}, H, W), got {tuple(pred.shape)}"
        )
    if target.shape[0] != pred.shape[0] or target.shape[-2:] != pred.shape[-2:]:
        raise ValueError(
            f"{task}: target {tuple(target.shape)} does not match prediction {tuple(pred.shape)}"
        )


def _safe_div(num: float, den: float, undefined: float) -> float:
    return num / den if den > 0 else undefined


class TaskMeter(ABC):
    """Accumulates one task's metrics over batches as a fixed-size float64 vector."""

    def __init__(self, task: Task) -> None:
        self.task = task
        # Fixed length, so a rank that saw no batch still takes part in the reduction.
        self._sums = torch.zeros(self._state_size(), dtype=_F64)

    @abstractmethod
    def _state_size(self) -> int: ...

    @abstractmethod
    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """This batch's contribution to the state, a float64 vector on ``pred``'s device."""

    @abstractmethod
    def _metrics(self, sums: list[float]) -> dict[str, float]: ...

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Fold one batch in; shapes and invalid encodings as in :mod:`models.tasks`."""
        pred = pred.detach()
        target = target.detach()
        batch = self._batch_sums(pred, target)
        # Accumulate where the batch lives (no host sync per batch); MPS has no float64.
        device = batch.device if batch.device.type != "mps" else torch.device("cpu")
        self._sums = self._sums.to(device) + batch.to(device)

    def compute(self) -> dict[str, float]:
        """Exactly the metric names of ``task.metrics``."""
        values = self._metrics(self._sums.cpu().tolist())
        return {m.name: float(values[m.name]) for m in self.task.metrics}

    def state(self) -> torch.Tensor:
        """A copy of every accumulated sum and count (1-D float64), for ``all_reduce(SUM)``."""
        return self._sums.clone()

    def load_state(self, state: torch.Tensor) -> None:
        """Replace the accumulated sums, e.g. with the all-reduced ``state()`` of every rank."""
        if state.dim() != 1 or state.numel() != self._sums.numel():
            raise ValueError(
                f"{self.task.name}: state must be 1-D with {self._sums.numel()} values, "
                f"got shape {tuple(state.shape)}"
            )
        self._sums = state.detach().to(_F64).clone()

    def reset(self) -> None:
        self._sums = torch.zeros_like(self._sums)


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
        confusion = torch.tensor(sums, dtype=_F64).view(k, k)  # rows: target, cols: prediction
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
    """

    def _state_size(self) -> int:
        # squared error, relative error, squared log error, counts under 1.25^1..3, valid pixels
        return 7

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("depth", pred, target, 1)
        valid = target > 0
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
    cumulative = torch.tensor(histogram, dtype=_F64).cumsum(0)
    n = int(round(float(cumulative[-1])))
    if n == 0:
        return math.nan
    # 1-based ranks of the middle value(s): equal for odd n, adjacent for even n.
    ranks = torch.tensor([(n + 1) // 2, n // 2 + 1], dtype=_F64)
    bins = torch.searchsorted(cumulative, ranks)  # first bin whose cumulative count ≥ rank
    return float(((bins.to(_F64) + 0.5) * ANGLE_BIN_DEGREES).mean())


def _levels(logits: torch.Tensor, logit_thresholds: torch.Tensor) -> torch.Tensor:
    """How many thresholds each logit strictly exceeds (``bucketize`` with ``right=False``)."""
    return torch.bucketize(logits, logit_thresholds.to(logits.device), right=False)


def _logit_thresholds(steps: int) -> torch.Tensor:
    """Probabilities k/steps, k = 1..steps−1, as logits: sigmoid(x) > k/n ⇔ x > log(k/(n−k))."""
    k = torch.arange(1, steps, dtype=_F64)
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
        hist = torch.tensor(sums, dtype=_F64).view(3, _EDGE_STEPS)
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
        hist = torch.tensor(sums, dtype=_F64).view(2, _SALIENCY_STEPS)
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
        rows = torch.tensor([k - 1 for k in _SALIENCY_MAX_F_STEPS])
        return {"iou": iou, "max_f": float(f[rows].max())}


_METERS: dict[str, type[TaskMeter]] = {
    "semseg": SemsegMeter,
    "human_parts": SemsegMeter,
    "depth": DepthMeter,
    "normals": NormalsMeter,
    "edges": EdgesMeter,
    "saliency": SaliencyMeter,
}


def create_meter(task: Task) -> TaskMeter:
    """The meter for ``task`` (by its name)."""
    if task.name not in _METERS:
        raise ValueError(f"no meter for task {task.name!r}; expected one of {sorted(_METERS)}")
    return _METERS[task.name](task)


class MultiTaskMeter:
    """One :class:`TaskMeter` per task, updated together, reduced in one collective."""

    def __init__(self, tasks: Mapping[str, Task]) -> None:
        self.meters: dict[str, TaskMeter] = {name: create_meter(t) for name, t in tasks.items()}

    def update(
        self,
        preds: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        labelled: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Fold in one batch; ``labelled[task]`` (B,) bool drops unlabelled samples."""
        missing = [n for n in self.meters if n not in preds or n not in targets]
        if missing:
            raise ValueError(f"update: no prediction or target for task(s) {missing}")
        for name, meter in self.meters.items():
            pred, target = preds[name], targets[name]
            mask = None if labelled is None else labelled.get(name)
            if mask is not None:
                mask = mask.to(device=pred.device, dtype=torch.bool).reshape(-1)
                pred, target = pred[mask], target[mask.to(target.device)]
            meter.update(pred, target)

    def compute(self) -> dict[str, dict[str, float]]:
        return {name: meter.compute() for name, meter in self.meters.items()}

    def state(self) -> torch.Tensor:
        """Every meter's state, concatenated in task order."""
        states = [m.state() for m in self.meters.values()]
        device = states[0].device if states else torch.device("cpu")
        return torch.cat([s.to(device) for s in states]) if states else torch.zeros(0, dtype=_F64)

    def load_state(self, state: torch.Tensor) -> None:
        sizes = [m.state().numel() for m in self.meters.values()]
        if state.dim() != 1 or state.numel() != sum(sizes):
            raise ValueError(
                f"state must be 1-D with {sum(sizes)} values, got shape {tuple(state.shape)}"
            )
        for meter, part in zip(self.meters.values(), state.split(sizes), strict=True):
            meter.load_state(part)

    def all_reduce(self) -> None:
        """Sum every meter's state across ranks (a no-op outside a multi-process group)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
            return
        state = self.state().to(_collective_device())
        dist.all_reduce(state, op=dist.ReduceOp.SUM)
        self.load_state(state)

    def reset(self) -> None:
        for meter in self.meters.values():
            meter.reset()


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo (and the CPU side of mixed backends) CPU ones.
    backend = str(dist.get_backend())
    if "nccl" in backend and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def delta_m(
    mtl: Mapping[str, Mapping[str, float]],
    single: Mapping[str, Mapping[str, float]],
    tasks: Mapping[str, Task],
) -> float:
    """Multi-task performance Δm in percent (Maninis et al. 2019; Vandenhende et al. 2021).

    Δm = 100/T · Σ_t 1/|M_t| Σ_{m∈M_t} (−1)^{l_m} (M_mtl − M_st) / M_st, with l_m = 1 when
    lower is better, over the tasks (and their metrics) present in both ``mtl`` and ``single``.
    With one metric per task this is exactly Δm = 100/T · Σ_t (−1)^{l_t} (M_t − M_b,t) / M_b,t;
    a task reported with several metrics counts once, as the mean of its metrics' terms.
    Positive means the multi-task model beats the single-task references.
    """
    per_task: list[float] = []
    for name, task in tasks.items():
        if name not in mtl or name not in single:
            continue
        terms = []
        for metric in task.metrics:
            if metric.name not in mtl[name] or metric.name not in single[name]:
                continue
            reference = float(single[name][metric.name])
            if reference == 0:
                raise ValueError(
                    f"delta_m: single-task reference {name}.{metric.name} is 0; "
                    "relative change is undefined"
                )
            change = (float(mtl[name][metric.name]) - reference) / reference
            terms.append(change if metric.higher_is_better else -change)
        if terms:
            per_task.append(sum(terms) / len(terms))
    if not per_task:
        raise ValueError(
            f"delta_m: no task has metrics in both results; tasks {sorted(tasks)}, "
            f"multi-task {sorted(mtl)}, single-task {sorted(single)}"
        )
    return 100.0 * sum(per_task) / len(per_task)
