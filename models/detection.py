"""Anchor-based detection head maths: anchor matching, the training loss and post-processing.

Tensor contract for the ``detection`` task (B = batch, A = anchors, C = classes):

* prediction ``pred`` (B, A, 8 + C): columns ``0:4`` the predicted boxes, already decoded,
  xyxy in input pixels; ``4:8`` the anchor boxes, xyxy in input pixels (the same for every
  image); ``8:`` the class logits (one sigmoid per class, no background column).
* target ``target`` (B, N, 5): rows ``[x1, y1, x2, y2, label]`` in input pixels with
  ``label`` in ``0..C-1``; padding rows have ``label == -1``. An image without a valid row
  has no objects; a batch without any valid row leaves the task unlabelled in that batch.

The loss is a sigmoid focal loss (γ = 2, α = 0.25) over every anchor and class plus
``10 ×`` a GIoU box loss (``1 − GIoU``) on the positive anchors, both divided by the number
of positive anchors in the batch (at least 1).
"""

from __future__ import annotations

import torch
from torchvision.ops import (
    batched_nms,
    box_iou,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)

__all__ = [
    "BOX_LOSS_WEIGHT",
    "FOCAL_ALPHA",
    "FOCAL_GAMMA",
    "box_iou",
    "detection_loss",
    "match_anchors",
    "postprocess",
    "split_prediction",
]

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
BOX_LOSS_WEIGHT = 10.0


def split_prediction(pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ``pred`` (B, A, 8 + C) into boxes (B, A, 4), anchors (A, 4) and logits (B, A, C)."""
    if pred.dim() != 3 or pred.shape[-1] < 9:
        raise ValueError(f"detection: prediction must be (B, A, 8 + C), got {tuple(pred.shape)}")
    return pred[..., 0:4], pred[0, :, 4:8], pred[..., 8:]


def _check_target(pred: torch.Tensor, target: torch.Tensor) -> None:
    if target.dim() != 3 or target.shape[-1] != 5 or target.shape[0] != pred.shape[0]:
        raise ValueError(
            f"detection: target must be (B, N, 5) with B = {pred.shape[0]}, "
            f"got {tuple(target.shape)}"
        )


def match_anchors(
    anchors: torch.Tensor, boxes: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """SSD-style matching of anchors (A, 4) to ground-truth boxes (N, 4), both xyxy.

    Each anchor takes its highest-IoU box when that IoU is at least ``iou_threshold``; then
    every box is forced onto its own highest-IoU anchor (whatever the IoU), so no box is left
    without a positive. When two boxes force the same anchor the later box wins.

    Returns the matched box index per anchor, int64 (A,), ``-1`` for negatives.
    """
    matched = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    if boxes.shape[0] == 0 or anchors.shape[0] == 0:
        return matched
    iou = box_iou(anchors, boxes.to(anchors.dtype))  # (A, N)
    best_iou, best_box = iou.max(dim=1)
    matched = torch.where(best_iou >= iou_threshold, best_box, matched)
    forced_anchor = iou.argmax(dim=0)  # (N,)
    matched[forced_anchor] = torch.arange(boxes.shape[0], device=anchors.device)
    return matched


def detection_loss(
    pred: torch.Tensor, target: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Focal classification loss + ``10 ×`` GIoU box loss, per positive anchor.

    ``focal = Σ_{anchors, classes} FL(logit, onehot)`` with one-hot targets on positive
    anchors and all-zero targets on negatives; ``box = Σ_{positives} (1 − GIoU(pred, gt))``;
    the loss is ``(focal + 10 · box) / max(1, #positives)`` with positives counted over the
    whole batch. A batch with no valid target row returns ``pred.sum() * 0.0``: exactly
    zero, with an all-zero gradient, so the caller can treat the task as unlabelled.
    """
    _check_target(pred, target)
    boxes, anchors, logits = split_prediction(pred)
    valid = target[..., 4] >= 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    num_classes = logits.shape[-1]
    cls_targets = torch.zeros_like(logits)
    pos_pred: list[torch.Tensor] = []
    pos_gt: list[torch.Tensor] = []
    for b in range(pred.shape[0]):
        gt = target[b][valid[b]]
        labels = gt[:, 4].long()
        if bool(((labels < 0) | (labels >= num_classes)).any()):
            raise ValueError(f"detection: labels must be in 0..{num_classes - 1}")
        matched = match_anchors(anchors.detach(), gt[:, :4], iou_threshold)
        pos = torch.nonzero(matched >= 0).squeeze(1)
        if pos.numel() == 0:
            continue
        cls_targets[b, pos, labels[matched[pos]]] = 1.0
        pos_pred.append(boxes[b, pos])
        pos_gt.append(gt[matched[pos], :4].to(boxes.dtype))
    focal = sigmoid_focal_loss(
        logits, cls_targets, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA, reduction="sum"
    )
    num_pos = sum(p.shape[0] for p in pos_pred)
    if num_pos:
        box = generalized_box_iou_loss(torch.cat(pos_pred), torch.cat(pos_gt), reduction="sum")
    else:
        box = boxes.sum() * 0.0
    return (focal + BOX_LOSS_WEIGHT * box) / max(1, num_pos)


@torch.no_grad()
def postprocess(
    pred: torch.Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    keep: int = 200,
) -> list[dict[str, torch.Tensor]]:
    """Per-image detections from ``pred`` (B, A, 8 + C).

    Every (anchor, class) pair whose sigmoid score exceeds ``score_threshold`` is a
    candidate; class-wise NMS (:func:`torchvision.ops.batched_nms`) at ``iou_threshold``
    removes duplicates and the ``keep`` highest-scoring survivors are returned as dicts with
    ``boxes`` (K, 4) xyxy, ``scores`` (K,) and ``labels`` (K,) int64, by decreasing score.
    """
    boxes, _, logits = split_prediction(pred)
    num_classes = logits.shape[-1]
    scores = logits.float().sigmoid()
    out: list[dict[str, torch.Tensor]] = []
    for b in range(pred.shape[0]):
        flat = scores[b].reshape(-1)  # anchor-major: index = anchor * C + class
        idx = torch.nonzero(flat > score_threshold).squeeze(1)
        cand_scores = flat[idx]
        cand_labels = idx % num_classes
        cand_boxes = boxes[b].float()[idx // num_classes]
        kept = batched_nms(cand_boxes, cand_scores, cand_labels, iou_threshold)[:keep]
        out.append(
            {"boxes": cand_boxes[kept], "scores": cand_scores[kept], "labels": cand_labels[kept]}
        )
    return out
