from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from study.metrics import DetectionMeter
from study.metrics._ap import IOU_THRESHOLDS, average_precision

REPO = Path(__file__).resolve().parents[3]


def _det(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def _target(rows: list[list[list[float]]], n: int = 4) -> torch.Tensor:
    """Pad per-image [x1, y1, x2, y2, label] rows to (B, n, 5) with label −1."""
    out = torch.full((len(rows), n, 5), -1.0)
    for b, image in enumerate(rows):
        if image:
            out[b, : len(image)] = torch.tensor(image)
    return out


G1, G2, G3 = [0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [40.0, 0.0, 50.0, 10.0]


def test_ap_by_hand_with_all_point_interpolation() -> None:
    # 1 class, 3 GTs, 4 detections by decreasing score:
    #   0.9 = G1 exactly (TP), 0.8 far from every GT (FP), 0.7 = G2 exactly (TP),
    #   0.6 = G1 again (FP: G1 is already matched).
    # recall    1/3, 1/3, 2/3, 2/3;  precision 1, 1/2, 2/3, 1/2
    # envelope  1,   2/3, 2/3, 1/2 -> AP = 1/3 · 1 + 1/3 · 2/3 = 5/9 (recall never reaches 1)
    # VOC2010+ scores at IoU 0.5 only: map = map50 = 5/9.
    meter = DetectionMeter(num_classes=1, protocol="voc12")
    far = [100.0, 100.0, 110.0, 110.0]
    dets = [_det([G1, far, G2, G1], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])]
    meter.update_detections(dets, _target([[G1 + [0], G2 + [0], G3 + [0]]]))
    result = meter.compute()
    assert result["map50"] == pytest.approx(5 / 9)
    assert result["map"] == pytest.approx(5 / 9)
    # The same numbers through the bare AP function, detections given out of order.
    tp = np.array([True, False, False, True])
    assert average_precision(np.array([0.7, 0.6, 0.8, 0.9]), tp, 3) == pytest.approx(5 / 9)


def test_perfect_detections_give_map_one() -> None:
    meter = DetectionMeter(num_classes=2)
    dets = [_det([G1, G2], [0.9, 0.3], [0, 1]), _det([G3], [0.5], [1])]
    meter.update_detections(dets, _target([[G1 + [0], G2 + [1]], [G3 + [1]]]))
    assert meter.compute() == {"map": 1.0, "map50": 1.0}


def test_iou_point_seven_two_counts_for_thresholds_up_to_point_seven() -> None:
    # Detection [0, 0, 10, 7.2] inside G1 = [0, 0, 10, 10]: IoU = 72/100 = 0.72. It is a TP
    # at 0.50, 0.55, 0.60, 0.65, 0.70 (AP 1) and a FP at 0.75 ... 0.95 (AP 0):
    # map = 5/10, map50 = 1.
    meter = DetectionMeter(num_classes=1)
    meter.update_detections([_det([[0.0, 0.0, 10.0, 7.2]], [0.8], [0])], _target([[G1 + [0]]]))
    assert meter.compute() == {"map": pytest.approx(0.5), "map50": 1.0}
    assert IOU_THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_greedy_matching_takes_the_highest_iou_unmatched_gt() -> None:
    # Two GTs, the higher-scored detection overlaps both (IoU 0.6 with A, 0.74 with B) and
    # takes B; the lower-scored one = A exactly then takes A: both TP at 0.5 -> AP 1.
    a, b = [0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]
    d = [2.5, 0.0, 12.5, 10.0]  # IoU with a: 75/125 = 0.6, with b: 85/115 ≈ 0.74
    meter = DetectionMeter(num_classes=1)
    meter.update_detections([_det([d, a], [0.9, 0.8], [0, 0])], _target([[a + [0], b + [0]]]))
    assert meter.compute()["map50"] == 1.0


def test_classes_without_ground_truth_are_excluded() -> None:
    meter = DetectionMeter(num_classes=3)
    # Class 0 perfect; class 1 has only a (false-positive) detection and no GT; class 2 has
    # neither: the mean is over class 0 only.
    dets = [_det([G1, G2], [0.9, 0.95], [0, 1])]
    meter.update_detections(dets, _target([[G1 + [0]]]))
    assert meter.compute() == {"map": 1.0, "map50": 1.0}
    # A class with GT but no detection has AP 0 and counts.
    meter.update_detections([_det([], [], [])], _target([[G3 + [2]]]))
    assert meter.compute() == {"map": 0.5, "map50": 0.5}


def test_unlabelled_batch_is_skipped_and_empty_image_counts_false_positives() -> None:
    meter = DetectionMeter(num_classes=1, protocol="voc12")
    assert math.isnan(meter.compute()["map"])
    # Whole batch without a valid row: skipped (its detection would otherwise be a FP).
    meter.update_detections([_det([G2], [0.99], [0])], _target([[]]))
    meter.update_detections([_det([G1], [0.5], [0])], _target([[G1 + [0]]]))
    assert meter.compute()["map"] == 1.0
    # A labelled batch with an object-free image: its detection is a false positive.
    meter.update_detections([_det([G2], [0.99], [0]), _det([], [], [])], _target([[], [G3 + [0]]]))
    # Now 2 GTs; ranking 0.99 FP, 0.5 TP(G1): recall 1/2 at precision 1/2; G3 missed.
    assert meter.compute()["map50"] == pytest.approx(0.25)


def _random_batch(seed: int, b: int = 4, classes: int = 3) -> tuple[list[dict], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    rows, dets = [], []
    for _ in range(b):
        n = int(torch.randint(0, 4, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * 80
        wh = torch.rand(n, 2, generator=gen) * 30 + 5
        labels = torch.randint(0, classes, (n,), generator=gen).float()
        gt = torch.cat([xy, xy + wh, labels[:, None]], dim=1)
        rows.append(gt.tolist())
        jitter = torch.randn(n, 4, generator=gen) * 3
        extra = int(torch.randint(0, 3, (1,), generator=gen))
        fxy = torch.rand(extra, 2, generator=gen) * 80
        boxes = torch.cat([gt[:, :4] + jitter, torch.cat([fxy, fxy + 10], dim=1)])
        labels_d = torch.cat([labels.long(), torch.randint(0, classes, (extra,), generator=gen)])
        scores = torch.rand(n + extra, generator=gen)
        dets.append({"boxes": boxes, "scores": scores, "labels": labels_d})
    return dets, _target(rows)


def test_two_updates_equal_one_update() -> None:
    d1, t1 = _random_batch(1)
    d2, t2 = _random_batch(2)
    streamed = DetectionMeter(num_classes=3)
    streamed.update_detections(d1, t1)
    streamed.update_detections(d2, t2)
    once = DetectionMeter(num_classes=3)
    once.update_detections(d1 + d2, torch.cat([t1, t2]))
    assert streamed.compute() == pytest.approx(once.compute())
    assert 0.0 < once.compute()["map"] < 1.0
    once.reset()
    assert math.isnan(once.compute()["map"])


def test_update_runs_postprocess_on_raw_predictions() -> None:
    boxes = torch.tensor([[G1, G2]])
    logits = torch.tensor([[[6.0, -9.0], [-9.0, 6.0]]])
    pred = torch.cat([boxes, boxes, logits], dim=-1)
    meter = DetectionMeter(num_classes=2)
    meter.update(pred, _target([[G1 + [0], G2 + [1]]]))
    assert meter.compute() == {"map": 1.0, "map50": 1.0}


def test_all_gather_is_a_no_op_without_a_process_group() -> None:
    dets, target = _random_batch(3)
    meter = DetectionMeter(num_classes=3)
    meter.update_detections(dets, target)
    before = meter.compute()
    meter.all_gather()
    assert meter.compute() == before


_WORKER = """
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_detection_metric import _random_batch
from study.metrics._detection import DetectionMeter
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", init_method={init!r}, rank=rank, world_size=2)
dets, target = _random_batch(10 + rank)
meter = DetectionMeter(num_classes=3)
meter.update_detections(dets, target)
meter.all_gather()
print(json.dumps(meter.compute()))
dist.destroy_process_group()
"""


def test_all_gather_over_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            _WORKER.format(
                repo=str(REPO),
                tests=str(Path(__file__).parent),
                init=f"file://{tmp_path / 'rendezvous'}",
            )
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    single = DetectionMeter(num_classes=3)
    for rank in range(2):
        single.update_detections(*_random_batch(10 + rank))
    for result in results:
        assert result == pytest.approx(single.compute())
