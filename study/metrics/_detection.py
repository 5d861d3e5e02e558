"""Detection mAP@[.5:.95] and mAP@.5 (see :class:`DetectionMeter`).

Unlike the dense meters (:class:`study.metrics.TaskMeter`), whose state is a fixed-size
vector of sums that ranks ``all_reduce``, this meter's state is variable-size: one record per
kept detection (score, class, true-positive flag at each IoU threshold) plus the number of
ground-truth boxes per class. Ranks combine it with :meth:`DetectionMeter.all_gather`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torchvision.ops import box_iou

from models.detection import postprocess

__all__ = ["IOU_THRESHOLDS", "DetectionMeter", "average_precision"]

# 0.50, 0.55, ..., 0.95, rounded so that e.g. 0.70 is exactly the float 0.7.
IOU_THRESHOLDS = np.round(0.5 + 0.05 * np.arange(10), 2)


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+) of one class at one IoU threshold.

    Detections are ranked by decreasing score (ties keep their order); the precision
    envelope (running maximum from the right) is integrated over every recall change.
    ``num_gt`` must be positive; a class without detections has AP 0.
    """
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1.0 - hits)
    recall = np.concatenate([[0.0], cum_tp / num_gt, [1.0]])
    precision = np.concatenate([[0.0], cum_tp / np.maximum(cum_tp + cum_fp, 1e-12), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    change = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[change + 1] - recall[change]) * precision[change + 1]))


def _match_image(boxes: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """True-positive flags (D, T) of one image's detections of one class at each threshold.

    Greedy in decreasing score order: a detection takes the unmatched ground truth with the
    highest IoU, and is a true positive when that IoU is at least the threshold; each ground
    truth is matched at most once per threshold.
    """
    tp = np.zeros((boxes.shape[0], len(IOU_THRESHOLDS)), dtype=bool)
    if boxes.shape[0] == 0 or gt.shape[0] == 0:
        return tp
    iou = box_iou(boxes.double(), gt.double()).numpy()
    order = np.argsort(-scores.numpy(), kind="stable")
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = np.zeros(gt.shape[0], dtype=bool)
        for d in order:
            candidates = np.where(taken, -1.0, iou[d])
            g = int(candidates.argmax())
            if candidates[g] >= threshold:
                taken[g] = True
                tp[d, t] = True
    return tp


class DetectionMeter:
    """Streaming mAP@[.5:.95] (``map``) and mAP@.5 (``map50``) for the detection task.

    ``map`` is the mean, over the 10 IoU thresholds 0.50:0.05:0.95 and over the classes that
    have at least one ground-truth box, of the all-point interpolated AP
    (:func:`average_precision`); ``map50`` is the same at IoU 0.5 only. Matching is greedy per
    image and class (:func:`_match_image`). No crowd / difficult handling, no area ranges and
    no per-image detection cap beyond :func:`models.detection.postprocess`'s ``keep``. Both
    metrics are NaN when no ground truth was seen.

    A batch whose target has no valid row is unlabelled and skipped; an image without a valid
    row in a labelled batch has no objects (its detections are false positives).

    The state is **not** fixed-size (one record per detection), so ranks combine it with
    :meth:`all_gather`, not with a sum reduction.
    """

    def __init__(self, num_classes: int, **postprocess_kwargs: float) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.num_classes = num_classes
        self.postprocess_kwargs = postprocess_kwargs
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._tp: list[np.ndarray] = []
        self._num_gt = np.zeros(self.num_classes, dtype=np.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Fold in a batch of raw predictions (B, A, 8 + C) via :func:`postprocess`."""
        if not bool((target[..., 4] >= 0).any()):
            return
        self.update_detections(postprocess(pred.detach(), **self.postprocess_kwargs), target)

    def update_detections(
        self, detections: list[dict[str, torch.Tensor]], target: torch.Tensor
    ) -> None:
        """Fold in post-processed detections (``boxes``, ``scores``, ``labels`` per image)."""
        target = target.detach().cpu()
        if target.dim() != 3 or target.shape[-1] != 5 or target.shape[0] != len(detections):
            raise ValueError(
                f"detection: target must be (B, N, 5) with B = {len(detections)}, "
                f"got {tuple(target.shape)}"
            )
        valid = target[..., 4] >= 0
        if not bool(valid.any()):
            return
        for det, gt_rows, keep in zip(detections, target, valid, strict=True):
            gt = gt_rows[keep]
            gt_labels = gt[:, 4].long()
            boxes = det["boxes"].detach().cpu()
            scores = det["scores"].detach().cpu().double()
            labels = det["labels"].detach().cpu().long()
            for name, lab in (("target", gt_labels), ("detection", labels)):
                if bool(((lab < 0) | (lab >= self.num_classes)).any()):
                    raise ValueError(f"{name} labels must be in 0..{self.num_classes - 1}")
            self._num_gt += np.bincount(gt_labels.numpy(), minlength=self.num_classes)
            for c in torch.unique(labels).tolist():
                mine = labels == c
                tp = _match_image(boxes[mine], scores[mine], gt[gt_labels == c, :4])
                self._scores.append(scores[mine].numpy())
                self._labels.append(np.full(int(mine.sum()), c, dtype=np.int64))
                self._tp.append(tp)

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._scores:
            return (
                np.zeros(0),
                np.zeros(0, dtype=np.int64),
                np.zeros((0, len(IOU_THRESHOLDS)), dtype=bool),
                self._num_gt,
            )
        return (
            np.concatenate(self._scores),
            np.concatenate(self._labels),
            np.concatenate(self._tp),
            self._num_gt,
        )

    def all_gather(self) -> None:
        """Replace the state by the union of every rank's (call once, before ``compute``).

        Uses :func:`torch.distributed.all_gather_object`; a no-op unless a process group
        with world size > 1 is initialised. Every rank must call it.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        gathered: list[object] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._state())
        self.reset()
        for scores, labels, tp, num_gt in gathered:  # type: ignore[misc]
            self._scores.append(scores)
            self._labels.append(labels)
            self._tp.append(tp)
            self._num_gt += num_gt

    def compute(self) -> dict[str, float]:
        """``{"map": mAP@[.5:.95], "map50": mAP@.5}``, fractions in [0, 1]."""
        scores, labels, tp, num_gt = self._state()
        classes = np.nonzero(num_gt > 0)[0]
        if classes.size == 0:
            return {"map": float("nan"), "map50": float("nan")}
        ap = np.array(
            [
                [
                    average_precision(scores[labels == c], tp[labels == c, t], int(num_gt[c]))
                    for t in range(len(IOU_THRESHOLDS))
                ]
                for c in classes
            ]
        )
        return {"map": float(ap.mean()), "map50": float(ap[:, 0].mean())}
