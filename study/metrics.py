"""Streaming, all-reducible metrics for the dense tasks of :mod:`models.tasks`, and Δm.

A meter never holds predictions: each ``update`` folds a batch into a fixed-size float64
vector of sums and counts (:meth:`TaskMeter.state`). Summing those vectors across
data-parallel ranks gives exactly what one process would get over all the data, so
:meth:`MultiTaskMeter.all_reduce` is one ``all_reduce(SUM)`` of one tensor.

Conventions when there is nothing to score: semseg, depth and normals report NaN when no
pixel was valid; the binary scores (edges ``f1``, saliency ``iou`` and ``max_f``) are 0
when undefined.
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
    "DepthMeter",
    "EdgesMeter",
    "MultiTaskMeter",
    "NormalsMeter",
    "SaliencyMeter",
    "SemsegMeter",
    "TaskMeter",
    "create_meter",
    "delta_m",
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
    """Confusion matrix over non-ignored pixels → ``miou`` and ``pixel_acc``."""

    def _state_size(self) -> int:
        return self.task.channels**2

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = self.task.channels
        if target.dim() != 3:
            raise ValueError(f"semseg: target must be (B, H, W), got {tuple(target.shape)}")
        _check_shape("semseg", pred, target.unsqueeze(1), k)
        labels = pred.argmax(dim=1)
        valid = target != IGNORE_INDEX
        index = target[valid].long() * k + labels[valid]
        if index.numel() and int(index.min()) < 0:
            raise ValueError(f"semseg: target has negative class ids (besides {IGNORE_INDEX})")
        counts = torch.bincount(index, minlength=k * k)
        # bincount grows past k*k exactly when a target id is ≥ k (and not the ignore id).
        if counts.numel() != k * k:
            raise ValueError(f"semseg: target has class ids ≥ {k} (besides {IGNORE_INDEX})")
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
    """Over pixels with target > 0: ``rmse``, ``abs_rel`` and ``delta1``."""

    def _state_size(self) -> int:
        return 4  # squared error, relative error, count within δ < 1.25, valid pixels

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
                (ratio < 1.25).sum().to(_F64),
                torch.tensor(float(p.numel()), dtype=_F64, device=p.device),
            ]
        )

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        squared, relative, within, count = sums
        mse = _safe_div(squared, count, math.nan)
        return {
            "rmse": math.sqrt(mse),
            "abs_rel": _safe_div(relative, count, math.nan),
            "delta1": _safe_div(within, count, math.nan),
        }


class NormalsMeter(TaskMeter):
    """Angle (degrees) between normalised prediction and target, over non-zero targets."""

    def _state_size(self) -> int:
        return 3  # sum of angles, count under 11.25°, valid pixels

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("normals", pred, target, 3)
        valid = target.abs().sum(dim=1) > 0  # (B, H, W)
        # (N, 3) vectors of valid pixels; float64 because acos is ill-conditioned near 0°.
        p = F.normalize(pred.movedim(1, -1)[valid].to(_F64), dim=-1)
        t = F.normalize(target.movedim(1, -1)[valid].to(_F64), dim=-1)
        angle = torch.rad2deg(torch.acos((p * t).sum(-1).clamp(-1.0, 1.0)))
        return torch.stack(
            [
                angle.sum(),
                (angle < 11.25).sum().to(_F64),
                torch.tensor(float(angle.numel()), dtype=_F64, device=angle.device),
            ]
        )

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        total, within, count = sums
        return {
            "mean_angle": _safe_div(total, count, math.nan),
            "within_11_25": _safe_div(within, count, math.nan),
        }


def _binary_counts(target: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """TP, FP, FN over non-ignored pixels, for a boolean ``positive`` prediction map."""
    valid = target != IGNORE_INDEX
    truth = (target > 0.5) & valid
    predicted = positive & valid
    tp = (predicted & truth).sum()
    fp = (predicted & ~truth).sum()
    fn = (~predicted & truth).sum()
    return torch.stack([tp, fp, fn]).to(_F64)


class EdgesMeter(TaskMeter):
    """``f1`` of sigmoid(logit) > 0.5 against the {0, 1} target, ignoring 255."""

    def _state_size(self) -> int:
        return 3  # TP, FP, FN

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("edges", pred, target, 1)
        # sigmoid(x) > 0.5 ⇔ x > 0, without rounding in the sigmoid.
        return _binary_counts(target, pred > 0)

    def _metrics(self, sums: list[float]) -> dict[str, float]:
        tp, fp, fn = sums
        return {"f1": _safe_div(2 * tp, 2 * tp + fp + fn, 0.0)}


_SALIENCY_STEPS = 20  # thresholds k/20 for k = 1..19, i.e. 0.05..0.95
_SALIENCY_BETA2 = 0.3


class SaliencyMeter(TaskMeter):
    """``iou`` at 0.5 and ``max_f`` (β² = 0.3) over thresholds 0.05..0.95, ignoring 255.

    The state is a histogram of how many thresholds each pixel's probability exceeds,
    split by ground truth, so every threshold's TP/FP/FN comes from 40 numbers.
    """

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        k = torch.arange(1, _SALIENCY_STEPS, dtype=_F64)
        # Thresholds as logits: sigmoid(x) > k/20 ⇔ x > log(k / (20 − k)); k = 10 gives 0.
        self._logit_thresholds = torch.log(k / (_SALIENCY_STEPS - k))

    def _state_size(self) -> int:
        return 2 * _SALIENCY_STEPS  # histogram for negatives, then for positives

    def _batch_sums(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_shape("saliency", pred, target, 1)
        valid = target != IGNORE_INDEX
        logits = pred[valid].to(_F64)
        truth = (target[valid] > 0.5).long()
        bounds = self._logit_thresholds.to(logits.device)
        # level = number of thresholds strictly below the logit, in 0..19.
        level = torch.bucketize(logits, bounds, right=False)
        counts = torch.bincount(truth * _SALIENCY_STEPS + level, minlength=2 * _SALIENCY_STEPS)
        return counts.to(_F64)

    def _threshold_counts(self, sums: list[float]) -> tuple[torch.Tensor, ...]:
        """TP, FP, FN at each threshold k/20, k = 1..19."""
        hist = torch.tensor(sums, dtype=_F64).view(2, _SALIENCY_STEPS)
        # Pixels above threshold k are those with level ≥ k: a reversed cumulative sum.
        above = hist.flip(1).cumsum(1).flip(1)[:, 1:]
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
        return {"iou": iou, "max_f": float(f.max())}


_METERS: dict[str, type[TaskMeter]] = {
    "semseg": SemsegMeter,
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
