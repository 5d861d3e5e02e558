"""Detection mAP by the COCO or the VOC protocol (see :class:`DetectionMeter`).

Unlike the dense meters (:class:`study.metrics.TaskMeter`), whose state is a fixed-size
vector of sums that ranks ``all_reduce``, this meter's state is variable-size: one record per
kept detection (score, class, true-positive flag at each IoU threshold) plus the number of
ground-truth boxes per class. Ranks combine it with :meth:`DetectionMeter.all_gather`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist

from study.metrics._ap import (
    COCO_MAX_DETECTIONS,
    DETECTION_PROTOCOLS,
    DetectionProtocol,
    average_precision,
    coco_average_precision,
    eleven_point_average_precision,
    iou_thresholds,
    match_image,
)

__all__ = ["DetectionMeter"]

_AP: dict[str, Callable[[np.ndarray, np.ndarray, int], float]] = {
    "coco": coco_average_precision,
    "voc07": eleven_point_average_precision,
    "voc12": average_precision,
}


class DetectionMeter:
    """Streaming detection mAP (``map``) and mAP at IoU 0.5 (``map50``) by a benchmark's protocol.

    ``protocol`` (:mod:`study.metrics._ap`) says how detections match and how AP is
    interpolated:

    - ``coco`` (default): ``map`` is COCO's AP, the 101-point AP averaged over the IoU
      thresholds 0.50:0.05:0.95; ``map50`` is COCO's AP50. At most 100 detections per image
      and class count (the highest-scored), as pycocotools' ``maxDets``.
    - ``voc07``: ``map`` and ``map50`` are both VOC2007's mAP: 11-point AP at IoU 0.5.
    - ``voc12``: ``map`` and ``map50`` are both VOC2010+'s mAP: all-point AP at IoU 0.5.

    Each mean is over the classes with at least one ground-truth box. No crowd / difficult
    handling (a dataset leaves difficult boxes out or keeps them as ordinary ones) and no
    area ranges. Both metrics are NaN when no ground truth was seen.

    A batch whose target has no valid row is unlabelled and skipped; an image without a valid
    row in a labelled batch has no objects (its detections are false positives).

    The state is **not** fixed-size (one record per detection), so ranks combine it with
    :meth:`all_gather`, not with a sum reduction.
    """

    def __init__(
        self, num_classes: int, protocol: DetectionProtocol = "coco", **postprocess_kwargs: float
    ) -> None:
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        if protocol not in DETECTION_PROTOCOLS:
            raise ValueError(
                f"unknown detection protocol {protocol!r}; expected one of "
                f"{', '.join(DETECTION_PROTOCOLS)}"
            )
        self.num_classes = num_classes
        self.protocol: DetectionProtocol = protocol
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
        # Imported on use: the detection head's ops import torchvision (torch._dynamo).
        from models.detection import postprocess

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
                mine = torch.nonzero(labels == c).flatten()
                if self.protocol == "coco":  # the best-scored 100, as pycocotools' maxDets
                    order = torch.argsort(-scores[mine], stable=True)
                    mine = mine[order[:COCO_MAX_DETECTIONS]]
                tp = match_image(boxes[mine], scores[mine], gt[gt_labels == c, :4], self.protocol)
                self._scores.append(scores[mine].numpy())
                self._labels.append(np.full(len(mine), c, dtype=np.int64))
                self._tp.append(tp)

    def _state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._scores:
            return (
                np.zeros(0),
                np.zeros(0, dtype=np.int64),
                np.zeros((0, len(iou_thresholds(self.protocol))), dtype=bool),
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
        """``{"map": …, "map50": …}`` by the meter's protocol, fractions in [0, 1]."""
        scores, labels, tp, num_gt = self._state()
        classes = np.nonzero(num_gt > 0)[0]
        if classes.size == 0:
            return {"map": float("nan"), "map50": float("nan")}
        ap_of = _AP[self.protocol]
        ap = np.array(
            [
                [
                    ap_of(scores[labels == c], tp[labels == c, t], int(num_gt[c]))
                    for t in range(tp.shape[1])
                ]
                for c in classes
            ]
        )
        return {"map": float(ap.mean()), "map50": float(ap[:, 0].mean())}
