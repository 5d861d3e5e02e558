"""Detection mAP by protocol: COCO against pycocotools, VOC2007 / VOC2010+ by hand."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.tasks import get_task
from study.metrics import DETECTION_PROTOCOLS, DetectionMeter, MetricOptions, MultiTaskMeter

Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _random_images(seed: int, images: int = 5, classes: int = 4) -> list[Image]:
    """Per image: ground-truth boxes and labels, detections' boxes, scores and labels.

    Detections are jittered copies of the ground truth (so IoUs spread over 0.5:0.95),
    duplicates, boxes of the wrong class and clutter; one image holds 130 detections of one
    class, past COCO's 100 per image and class.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(images):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 150, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(8, 60, (n, 2))], axis=1)
        gt_labels = rng.integers(0, classes, n)
        copies = rng.integers(0, 3, n)  # 0, 1 or 2 detections per object
        near = np.repeat(gt, copies, axis=0)
        near = near + rng.normal(0, 1, near.shape) * (near[:, 2:] - near[:, :2]).repeat(2, 1) / 8
        near_labels = np.repeat(gt_labels, copies)
        wrong = rng.random(near_labels.size) < 0.15
        near_labels = np.where(wrong, rng.integers(0, classes, near_labels.size), near_labels)
        clutter = 130 if i == 0 else int(rng.integers(0, 6))
        cxy = rng.uniform(0, 180, (clutter, 2))
        boxes = np.concatenate(
            [near, np.concatenate([cxy, cxy + rng.uniform(5, 40, (clutter, 2))], 1)]
        )
        labels = np.concatenate(
            [
                near_labels,
                np.zeros(clutter, dtype=np.int64) if i == 0 else rng.integers(0, classes, clutter),
            ]
        )
        scores = rng.random(len(boxes))
        out.append((gt, gt_labels, boxes, scores, labels))
    return out


def _ours(data: list[Image], classes: int, protocol: str) -> dict[str, float]:
    meter = DetectionMeter(classes, protocol=protocol)  # type: ignore[arg-type]
    for gt, gt_labels, boxes, scores, labels in data:
        target = torch.full((1, max(len(gt), 1), 5), -1.0, dtype=torch.float64)
        target[0, : len(gt), :4] = torch.from_numpy(gt)
        target[0, : len(gt), 4] = torch.from_numpy(gt_labels.astype(np.float64))
        det = {
            "boxes": torch.from_numpy(boxes),
            "scores": torch.from_numpy(scores),
            "labels": torch.from_numpy(labels.astype(np.int64)),
        }
        meter.update_detections([det], target)
    return meter.compute()


def _xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def _pycocotools(data: list[Image], classes: int) -> tuple[float, float]:
    """COCOeval's AP and AP50 (bbox, no crowd) of the same boxes."""
    annotations = []
    for i, (gt, gt_labels, *_) in enumerate(data):
        for box, c in zip(gt, gt_labels, strict=True):
            area = float((box[2] - box[0]) * (box[3] - box[1]))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(c) + 1,
                    "bbox": _xywh(box),
                    "area": area,
                    "iscrowd": 0,
                }
            )
    truth = COCO()
    truth.dataset = {
        "images": [{"id": i + 1, "width": 256, "height": 256} for i in range(len(data))],
        "annotations": annotations,
        "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)],
    }
    detections = [
        {"image_id": i + 1, "category_id": int(c) + 1, "bbox": _xywh(box), "score": float(s)}
        for i, (*_, boxes, scores, labels) in enumerate(data)
        for box, s, c in zip(boxes, scores, labels, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return float(evaluation.stats[0]), float(evaluation.stats[1])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_protocol_equals_pycocotools(seed: int) -> None:
    data = _random_images(seed)
    ap, ap50 = _pycocotools(data, classes=4)
    ours = _ours(data, classes=4, protocol="coco")
    assert 0.05 < ap < ap50 < 0.95  # a case where the thresholds and the ranking matter
    assert ours["map"] == pytest.approx(ap, abs=1e-6)
    assert ours["map50"] == pytest.approx(ap50, abs=1e-6)


def test_coco_keeps_the_best_100_detections_per_image_and_class() -> None:
    data = _random_images(0)
    capped = _ours(data, classes=4, protocol="coco")
    # Without the cap (the all-point protocol keeps everything) the clutter of image 0
    # would rank among the hits; pycocotools, which caps, is what the COCO result equals.
    assert capped["map"] == pytest.approx(_pycocotools(data, classes=4)[0], abs=1e-6)
    gt, gt_labels, boxes, scores, labels = data[0]
    assert (labels == 0).sum() > 100


# A VOC case by hand. Image 1 has ground truths A = [0, 0, 10, 10] and B = [5, 0, 15, 10]
# (side by side, IoU 1/3); image 2 has C = [40, 40, 50, 50]. One class, 3 ground truths.
# Detections by decreasing score:
#   0.9  image 1, A exactly                  IoU(A) = 1
#   0.8  image 1, D = [2, 0, 12, 10]         IoU(A) = 80/120 = 0.667, IoU(B) = 70/130 = 0.538
#   0.7  image 2, [0, 0, 5, 5], far from C   IoU(C) = 0
#   0.6  image 2, C exactly                  IoU(C) = 1
#   0.5  image 1, B exactly                  IoU(B) = 1
# VOC matching (the ground truth of highest IoU, matched or not; ≥ 0.5):
#   TP(A), FP (D's best is A, already matched: a duplicate), FP, TP(C), TP(B).
#   recall    1/3, 1/3, 1/3, 2/3, 1;  precision 1, 1/2, 1/3, 1/2, 3/5
#   envelope  1,   3/5, 3/5, 3/5, 3/5
#   voc12 (all-point) = 1/3 · 1 + 1/3 · 3/5 + 1/3 · 3/5 = 11/15
#   voc07 (11-point): recall ≥ 0, 0.1, 0.2, 0.3 → best precision 1 (4 points); ≥ 0.4 … 1.0
#   → 3/5 (7 points): (4 + 7 · 3/5) / 11 = 41/55
# COCO matching (the unmatched ground truth of highest IoU, if ≥ 0.5) at IoU 0.5:
#   TP(A), TP(B: A is taken, IoU(B) = 0.538), FP, TP(C), FP (B is taken).
#   recall 1/3, 2/3, 2/3, 1, 1;  precision 1, 1, 2/3, 3/4, 3/5;  envelope 1, 1, 3/4, 3/4, 3/5
#   101 points r = k/100: k = 0..66 (r ≤ 2/3) → 1, k = 67..100 → 3/4: (67 + 34 · 3/4) / 101
_A, _B, _C = [0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [40.0, 40.0, 50.0, 50.0]
_VOC_CASE: list[Image] = [
    (
        np.array([_A, _B]),
        np.array([0, 0]),
        np.array([_A, [2.0, 0.0, 12.0, 10.0], _B]),
        np.array([0.9, 0.8, 0.5]),
        np.array([0, 0, 0]),
    ),
    (
        np.array([_C]),
        np.array([0]),
        np.array([[0.0, 0.0, 5.0, 5.0], _C]),
        np.array([0.7, 0.6]),
        np.array([0, 0]),
    ),
]


def test_voc_protocols_by_hand() -> None:
    assert _ours(_VOC_CASE, 1, "voc12") == pytest.approx({"map": 11 / 15, "map50": 11 / 15})
    assert _ours(_VOC_CASE, 1, "voc07") == pytest.approx({"map": 41 / 55, "map50": 41 / 55})


def test_coco_ap50_of_the_voc_case_by_hand_and_by_pycocotools() -> None:
    ours = _ours(_VOC_CASE, 1, "coco")
    assert ours["map50"] == pytest.approx((67 + 34 * 0.75) / 101)
    assert ours["map50"] == pytest.approx(_pycocotools(_VOC_CASE, 1)[1], abs=1e-6)


def test_voc07_counts_a_recall_of_exactly_three_tenths() -> None:
    # 10 ground truths, 3 hits then nothing: recall reaches 0.3 exactly, at precision 1, so
    # 4 of the 11 points (0, 0.1, 0.2, 0.3) score 1: AP = 4/11.
    gt = np.array([[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(10)])
    data: list[Image] = [
        (
            gt,
            np.zeros(10, dtype=np.int64),
            gt[:3],
            np.array([0.9, 0.8, 0.7]),
            np.zeros(3, dtype=np.int64),
        )
    ]
    assert _ours(data, 1, "voc07")["map"] == pytest.approx(4 / 11)


def test_the_meter_of_a_study_takes_the_protocol() -> None:
    tasks = {"detection": get_task("detection", 1)}
    meter = MultiTaskMeter(tasks, MetricOptions(detection_protocol="voc07"))
    assert meter.gathered["detection"].protocol == "voc07"
    assert MultiTaskMeter(tasks).gathered["detection"].protocol == "coco"


def test_an_unknown_protocol_is_one_clear_line() -> None:
    assert DETECTION_PROTOCOLS == ("coco", "voc07", "voc12")
    with pytest.raises(
        ValueError, match=r"unknown detection protocol 'voc'; expected one of coco, voc07, voc12"
    ):
        DetectionMeter(1, protocol="voc")  # type: ignore[arg-type]
