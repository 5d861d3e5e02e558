from __future__ import annotations

import math

import pytest
import torch

from models.detection import (
    BOX_LOSS_WEIGHT,
    detection_loss,
    match_anchors,
    postprocess,
    split_prediction,
)


def _pred(boxes: torch.Tensor, anchors: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Assemble (B, A, 8 + C) from boxes (B, A, 4), anchors (A, 4), logits (B, A, C)."""
    b = boxes.shape[0]
    return torch.cat([boxes, anchors.expand(b, -1, -1), logits], dim=-1)


def test_match_anchors_by_hand_with_a_forced_match() -> None:
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [50.0, 50.0, 60.0, 60.0]]
    )
    gts = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1 with anchor 0, 0.6 with anchor 1
            [52.0, 52.0, 70.0, 70.0],  # IoU 64/360 ≈ 0.18 with anchor 2: forced
        ]
    )
    matched = match_anchors(anchors, gts, iou_threshold=0.5)
    assert matched.tolist() == [0, 0, 1]
    # Nothing to match: all negatives.
    assert match_anchors(anchors, torch.zeros(0, 4)).tolist() == [-1, -1, -1]
    # Above threshold, anchor 1 is negative; the low-IoU GT is still forced onto anchor 2.
    assert match_anchors(anchors, gts, iou_threshold=0.7).tolist() == [0, -1, 1]


@pytest.mark.parametrize("label", [0, -1])
def test_focal_loss_on_a_single_logit_by_hand(label: int) -> None:
    # One anchor, one class; the predicted box is the GT so the GIoU term is 0.
    box = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    x = 0.3
    pred = _pred(box, box[0], torch.tensor([[[x]]]))
    target = torch.tensor([[[0.0, 0.0, 10.0, 10.0, 0.0], [0.0, 0.0, 0.0, 0.0, -1.0]]])
    p = 1 / (1 + math.exp(-x))
    expected = -0.25 * (1 - p) ** 2 * math.log(p)  # positive: −α (1−p)^γ log p
    if label == -1:
        # The image has no object, but a second image carries the only GT (so the batch is
        # labelled): our anchor is a negative, −(1−α) p^γ log(1−p); the second image's
        # anchor is a positive with logit x and a perfect box.
        pred = torch.cat([pred, pred])
        target = torch.cat([target[:, [1, 1]], target])
        expected += -0.75 * p**2 * math.log(1 - p)
    loss = detection_loss(pred, target)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_loss_is_exactly_zero_with_zero_gradient_without_any_valid_target() -> None:
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 8 + 3, requires_grad=True)
    target = torch.full((2, 4, 5), -1.0)
    loss = detection_loss(pred, target)
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad is not None
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_loss_finite_and_decreasing_when_boxes_move_toward_the_gt() -> None:
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    boxes = torch.tensor([[[2.0, 3.0, 13.0, 12.0], [25.0, 18.0, 45.0, 35.0]]])
    logits = torch.tensor([[[0.1, -0.2], [0.4, 0.0]]])
    pred = _pred(boxes, anchors, logits).requires_grad_(True)
    target = torch.tensor([[[0.0, 0.0, 10.0, 10.0, 1.0], [0.0, 0.0, 0.0, 0.0, -1.0]]])
    loss = detection_loss(pred, target)
    assert torch.isfinite(loss)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    # Anchors receive no gradient through the (detached) matching; box columns do.
    assert pred.grad[0, 0, :4].abs().sum() > 0
    assert torch.equal(pred.grad[..., 4:8], torch.zeros_like(pred.grad[..., 4:8]))
    with torch.no_grad():
        moved = pred - 0.5 * pred.grad  # one step of gradient descent
    assert detection_loss(moved, target) < loss
    box_before, _, _ = split_prediction(pred.detach())
    box_after, _, _ = split_prediction(moved)
    gt = target[0, 0, :4]
    assert (box_after[0, 0] - gt).abs().sum() < (box_before[0, 0] - gt).abs().sum()


def test_box_term_is_weighted_ten_times() -> None:
    anchor = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    target = torch.tensor([[[0.0, 0.0, 10.0, 10.0, 0.0]]])
    perfect = detection_loss(_pred(anchor[None], anchor, torch.zeros(1, 1, 1)), target)
    half = torch.tensor([[[0.0, 0.0, 10.0, 5.0]]])  # IoU 0.5, GIoU 0.5 (enclosing = union)
    off = detection_loss(_pred(half, anchor, torch.zeros(1, 1, 1)), target)
    assert (off - perfect).item() == pytest.approx(BOX_LOSS_WEIGHT * 0.5, rel=1e-5)


def test_nms_removes_a_same_class_duplicate_and_keeps_another_class() -> None:
    anchors = torch.zeros(3, 4)
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 9.5]]])
    big, small = 5.0, -20.0
    logits = torch.tensor([[[big, small], [2.0, small], [small, 1.0]]])  # 2 classes
    (out,) = postprocess(_pred(boxes, anchors, logits), iou_threshold=0.5)
    assert out["labels"].tolist() == [0, 1]
    assert torch.equal(out["boxes"], boxes[0, [0, 2]])
    assert out["scores"].tolist() == pytest.approx(
        [torch.sigmoid(torch.tensor(t)).item() for t in (big, 1.0)]
    )


def test_keep_caps_the_number_of_detections() -> None:
    a = 30
    x = torch.arange(a, dtype=torch.float32) * 20  # disjoint boxes
    boxes = torch.stack([x, torch.zeros(a), x + 10, torch.full((a,), 10.0)], dim=-1)[None]
    logits = torch.linspace(0.0, 3.0, a).reshape(1, a, 1)
    pred = _pred(boxes, boxes[0], logits).repeat(2, 1, 1)
    outs = postprocess(pred, keep=7)
    assert len(outs) == 2
    for out in outs:
        assert out["boxes"].shape == (7, 4)
        assert torch.all(out["scores"][:-1] >= out["scores"][1:])
        assert out["scores"][0].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert postprocess(pred, score_threshold=0.99)[0]["boxes"].shape == (0, 4)
