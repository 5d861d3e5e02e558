"""Average precision as each detection benchmark computes it: matching and interpolation.

Three protocols (:data:`DETECTION_PROTOCOLS`):

- ``coco``: as pycocotools' ``COCOeval`` (bbox, area "all", at most 100 detections per image
  and class): a detection takes the unmatched ground truth of highest IoU, if that IoU is at
  least the threshold; AP is the 101-point interpolated precision (recall 0, 0.01, …, 1),
  averaged over the IoU thresholds 0.50:0.05:0.95.
- ``voc07``: the VOC2007 devkit at IoU 0.5: a detection is compared with the ground truth
  of highest IoU, matched or not; at IoU ≥ 0.5 it is a true positive if that ground truth
  is still unmatched, else a false positive (a duplicate). AP is the 11-point interpolated
  precision (recall 0, 0.1, …, 1).
- ``voc12``: the VOC2010+ devkit: the same matching, all-point interpolated AP.

Boxes are 0-based, end-exclusive pixel boxes, so a box's width is ``x2 − x1`` where the VOC
devkit's 1-based inclusive boxes give ``xmax − xmin + 1``: the same number, and no "+1".
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch

__all__ = [
    "COCO_MAX_DETECTIONS",
    "DETECTION_PROTOCOLS",
    "IOU_THRESHOLDS",
    "DetectionProtocol",
    "average_precision",
    "coco_average_precision",
    "eleven_point_average_precision",
    "iou_thresholds",
    "match_image",
]

DetectionProtocol = Literal["coco", "voc07", "voc12"]
DETECTION_PROTOCOLS: tuple[str, ...] = get_args(DetectionProtocol)

# 0.50, 0.55, ..., 0.95, rounded so that e.g. 0.70 is exactly the float 0.7.
IOU_THRESHOLDS = np.round(0.5 + 0.05 * np.arange(10), 2)
#: pycocotools' ``maxDets[-1]``: detections kept per image and class, by score.
COCO_MAX_DETECTIONS = 100
_COCO_RECALLS = np.linspace(0.0, 1.0, 101)  # as pycocotools' recThrs
_VOC07_RECALLS = np.arange(11) / 10  # k/10 correctly rounded, so recall 3/10 reaches 0.3


def iou_thresholds(protocol: DetectionProtocol) -> np.ndarray:
    """The IoU thresholds a protocol scores at: 0.50:0.95 for COCO, 0.5 for VOC."""
    return IOU_THRESHOLDS if protocol == "coco" else IOU_THRESHOLDS[:1]


def _ranked(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each detection, ranked by decreasing score (ties stable)."""
    order = np.argsort(-scores, kind="stable")
    hits = tp[order].astype(np.float64)
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1.0 - hits)
    return cum_tp / num_gt, cum_tp / np.maximum(cum_tp + cum_fp, np.finfo(np.float64).eps)


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+) of one class at one IoU threshold.

    Detections are ranked by decreasing score (ties keep their order); the precision
    envelope (running maximum from the right) is integrated over every recall change.
    ``num_gt`` must be positive; a class without detections has AP 0.
    """
    rec, prec = _ranked(scores, tp, num_gt)
    recall = np.concatenate([[0.0], rec, [1.0]])
    precision = np.concatenate([[0.0], prec, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    change = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[change + 1] - recall[change]) * precision[change + 1]))


def eleven_point_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC2007's AP: the mean over recall r = 0, 0.1, …, 1 of the best precision at recall ≥ r
    (0 where recall never reaches r)."""
    rec, prec = _ranked(scores, tp, num_gt)
    best = [prec[rec >= r].max() if (rec >= r).any() else 0.0 for r in _VOC07_RECALLS]
    return float(np.mean(best))


def coco_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """COCO's AP: the mean over recall r = 0, 0.01, …, 1 of the precision envelope at the
    first detection whose recall is ≥ r (0 past the highest recall), as pycocotools."""
    rec, prec = _ranked(scores, tp, num_gt)
    if rec.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(prec[::-1])[::-1]
    at = np.searchsorted(rec, _COCO_RECALLS, side="left")
    reached = at < rec.size
    return float(np.where(reached, envelope[np.minimum(at, rec.size - 1)], 0.0).mean())


def match_image(
    boxes: torch.Tensor, scores: torch.Tensor, gt: torch.Tensor, protocol: DetectionProtocol
) -> np.ndarray:
    """True-positive flags (D, T) of one image's detections of one class at each of the
    protocol's IoU thresholds, in decreasing score order; each ground truth matches once."""
    thresholds = iou_thresholds(protocol)
    tp = np.zeros((boxes.shape[0], len(thresholds)), dtype=bool)
    if boxes.shape[0] == 0 or gt.shape[0] == 0:
        return tp
    # Imported on use: torchvision's ops import torch._dynamo, seconds a study's driver and
    # its dense-task trials never need.
    from torchvision.ops import box_iou

    iou = box_iou(boxes.double(), gt.double()).numpy()
    order = np.argsort(-scores.numpy(), kind="stable")
    for t, threshold in enumerate(thresholds):
        taken = np.zeros(gt.shape[0], dtype=bool)
        for d in order:
            # COCO looks among the unmatched ground truths, VOC at the best one, matched or not.
            candidates = np.where(taken, -1.0, iou[d]) if protocol == "coco" else iou[d]
            g = int(candidates.argmax())
            if candidates[g] >= threshold and not taken[g]:
                taken[g] = True
                tp[d, t] = True
    return tp
