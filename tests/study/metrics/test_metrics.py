"""Streaming metrics: hand-computed values, chunking, state sums, labelled masks, Δm."""

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
import torch.nn.functional as F

from models.tasks import HUMAN_PARTS_CLASSES, IGNORE_INDEX, get_task
from study.metrics import MetricOptions, MultiTaskMeter, TaskMeter, create_meter, delta_m

TASKS = ("semseg", "human_parts", "depth", "normals", "edges", "saliency")
NUM_CLASSES = 4
REPO = Path(__file__).resolve().parents[3]


def _task(name: str):
    return get_task(name, NUM_CLASSES)


def _logit(p: list[float]) -> torch.Tensor:
    p_t = torch.tensor(p, dtype=torch.float64)
    return torch.log(p_t / (1 - p_t)).float()


def _meter(name: str, pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    meter = create_meter(_task(name))
    meter.update(pred, target)
    return meter.compute()


def test_semseg_by_hand() -> None:
    target = torch.tensor([[[0, 0, 1], [2, IGNORE_INDEX, 1]]])
    labels = torch.tensor([[[0, 1, 1], [2, 0, 0]]])
    logits = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    got = _meter("semseg", logits, target)
    # 3 of 5 valid pixels right; IoU 1/3, 1/3, 1 over classes 0-2 (class 3 appears nowhere).
    assert got == pytest.approx({"miou": 5 / 9, "pixel_acc": 0.6})


def test_human_parts_by_hand_has_seven_classes_whatever_num_classes() -> None:
    assert _task("human_parts").channels == HUMAN_PARTS_CLASSES == 7
    target = torch.tensor([[[0, 6, 6], [3, IGNORE_INDEX, 5]]])
    labels = torch.tensor([[[0, 6, 5], [3, 6, 5]]])
    logits = F.one_hot(labels, 7).permute(0, 3, 1, 2).float()
    # Class 0: 1/1, class 3: 1/1, class 5: 1/2 (one false positive), class 6: 1/2 (one
    # miss); the ignored pixel's prediction 6 counts for nothing; classes 1, 2, 4 absent.
    assert _meter("human_parts", logits, target) == pytest.approx({"miou": 3 / 4})
    with pytest.raises(ValueError, match="human_parts: target has class ids"):
        create_meter(_task("human_parts")).update(torch.zeros(1, 7, 1, 1), torch.full((1, 1, 1), 7))


def test_semseg_rejects_out_of_range_ids() -> None:
    meter = create_meter(_task("semseg"))
    with pytest.raises(ValueError, match="class ids"):
        meter.update(torch.zeros(1, NUM_CLASSES, 1, 1), torch.full((1, 1, 1), NUM_CLASSES))


def test_depth_by_hand() -> None:
    target = torch.tensor([2.0, 0.0, 4.0, 1.0, 3.0]).view(1, 1, 1, 5)
    pred = torch.tensor([1.0, 5.0, 4.0, 2.0, 0.0]).view(1, 1, 1, 5)
    got = _meter("depth", pred, target)
    # Valid errors −1, 0, 1, −3; the 0 prediction is clamped, so its ratio is huge.
    expected = {"rmse": math.sqrt(11 / 4), "abs_rel": 0.625, "delta1": 0.25}
    assert {k: got[k] for k in expected} == pytest.approx(expected)
    assert list(got) == ["rmse", "abs_rel", "log_rmse", "delta1", "delta2", "delta3"]


def test_depth_log_rmse_and_deltas_by_hand() -> None:
    target = torch.tensor([1.0, 2.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 5)
    pred = torch.tensor([1.0, 3.0, 7.0, 1.8, 0.5]).view(1, 1, 1, 5)
    got = _meter("depth", pred, target)
    # Valid ratios max(p/t, t/p): 1, 1.5, 1.8, 2 against 1.25, 1.5625, 1.953125.
    log_rmse = math.sqrt((math.log(1.5) ** 2 + math.log(1.8) ** 2 + math.log(2) ** 2) / 4)
    assert got == pytest.approx(
        {
            "rmse": math.sqrt((1 + 0.64 + 0.25) / 4),
            "abs_rel": (0.5 + 0.8 + 0.5) / 4,
            "log_rmse": log_rmse,
            "delta1": 0.25,
            "delta2": 0.5,
            "delta3": 0.75,
        }
    )


def test_depth_cap_leaves_out_pixels_beyond_it() -> None:
    target = torch.tensor([2.0, 12.0, 4.0, 10.0, 0.0]).view(1, 1, 1, 5)
    pred = torch.tensor([1.0, 3.0, 4.0, 11.0, 5.0]).view(1, 1, 1, 5)
    # No cap: 4 labelled pixels, errors −1, −9, 0, 1 → rmse √(83/4).
    assert _meter("depth", pred, target)["rmse"] == pytest.approx(math.sqrt(83 / 4))
    # Cap 10 m: the 12 m pixel is left out, the 10 m one kept (errors −1, 0, 1 → √(2/3));
    # abs_rel (1/2 + 0 + 1/10) / 3 = 0.2, delta1: ratios 2, 1, 1.1 → 2/3.
    capped = create_meter(_task("depth"), MetricOptions(max_depth=10.0))
    capped.update(pred, target)
    got = capped.compute()
    assert got["rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert got["abs_rel"] == pytest.approx(0.2)
    assert got["delta1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="depth: max_depth must be > 0 metres, got 0"):
        create_meter(_task("depth"), MetricOptions(max_depth=0.0))


def test_normals_by_hand() -> None:
    deg10 = math.radians(10)
    target = torch.tensor([[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float32)
    pred = torch.tensor(
        [[0, 0, 2], [1, 0, 0], [3 * math.cos(deg10), 3 * math.sin(deg10), 0], [1, 1, 0]],
        dtype=torch.float32,
    )
    as_map = lambda v: v.T.reshape(1, 3, 2, 2)  # noqa: E731
    got = _meter("normals", as_map(pred), as_map(target))
    # Angles 0°, 10°, 45° over the three non-zero targets; the median is read off 0.01° bins.
    expected = {
        "mean_angle": 55 / 3,
        "median_angle": 10.0,
        "within_11_25": 2 / 3,
        "within_22_5": 2 / 3,
        "within_30": 2 / 3,
    }
    assert got == pytest.approx(expected, abs=0.006)
    assert got["mean_angle"] == pytest.approx(55 / 3, abs=1e-4)


def _tilted(degrees: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions tilted from the +z target by each angle, as (1, 3, 1, N) maps."""
    rad = torch.tensor(degrees, dtype=torch.float64).deg2rad()
    pred = torch.stack([rad.sin(), torch.zeros_like(rad), rad.cos()]).view(1, 3, 1, -1)
    target = torch.zeros_like(pred)
    target[:, 2] = 1.0
    return pred.float(), target.float()


def test_normals_median_and_thresholds_by_hand() -> None:
    pred, target = _tilted([20.0, 5.0, 40.0, 25.0])
    got = _meter("normals", pred, target)
    # Even count: the median is the mean of the middle angles 20° and 25°.
    assert got == pytest.approx(
        {
            "mean_angle": 22.5,
            "median_angle": 22.5,
            "within_11_25": 0.25,
            "within_22_5": 0.5,
            "within_30": 0.75,
        },
        abs=0.006,
    )


def test_normals_median_streams_within_half_a_bin() -> None:
    gen = torch.Generator().manual_seed(7)
    angles = (torch.rand(101, generator=gen, dtype=torch.float64) * 90).tolist()
    meter = create_meter(_task("normals"))
    for chunk in range(0, 101, 30):  # four batches of a streamed median
        pred, target = _tilted(angles[chunk : chunk + 30])
        meter.update(pred, target)
    assert meter.compute()["median_angle"] == pytest.approx(float(np.median(angles)), abs=0.006)


def test_saliency_by_hand() -> None:
    probs = [0.91, 0.71, 0.33, 0.62, 0.22, 0.97]
    logits = _logit(probs).view(1, 1, 2, 3)
    target = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, IGNORE_INDEX]).view(1, 1, 2, 3)
    got = _meter("saliency", logits, target)
    # At 0.5: TP 2, FP 1, FN 1. Best F_0.3 at 0.65..0.70: TP 2, FP 0, FN 1 → 2.6 / 2.9.
    assert got == pytest.approx({"iou": 0.5, "max_f": 2.6 / 2.9})
    # Only thresholds 0.20..0.90 count: here the best F would be at 0.95 (TP 1, FP 0).
    low = _logit([0.96, 0.91, 0.91, 0.91, 0.1, 0.1]).view(1, 1, 2, 3)
    target = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 3)
    # At 0.20..0.90 all four confident pixels are positive: P 1/4, R 1 → 1.3/4 / (0.3/4 + 1).
    assert _meter("saliency", low, target)["max_f"] == pytest.approx(1.3 * 0.25 / (0.075 + 1))


def _reference_saliency(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    valid = target != IGNORE_INDEX
    prob, truth = torch.sigmoid(logits[valid].double()), target[valid] > 0.5
    scores, iou = [], None
    for k in range(1, 20):
        pos = prob > k / 20
        tp = float((pos & truth).sum())
        fp = float((pos & ~truth).sum())
        fn = float((~pos & truth).sum())
        den = 1.3 * tp + 0.3 * fn + fp
        if 4 <= k <= 18:  # thresholds 0.20..0.90
            scores.append(1.3 * tp / den if den else 0.0)
        if k == 10:
            iou = tp / (tp + fp + fn)
    return {"iou": iou, "max_f": max(scores)}


def test_saliency_matches_a_per_threshold_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=gen) * 3
    target = (torch.rand(3, 1, 8, 8, generator=gen) > 0.6).float()
    target[0, 0, :2] = IGNORE_INDEX
    assert _meter("saliency", logits, target) == pytest.approx(_reference_saliency(logits, target))


def _batch(seed: int, batch: int = 6, size: int = 8) -> tuple[dict, dict]:
    """Random predictions and targets for every task, with invalid pixels sprinkled in."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=gen)  # noqa: E731
    shape = (batch, 1, size, size)
    semseg = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=gen)
    semseg[rand(batch, size, size) < 0.1] = IGNORE_INDEX
    parts = torch.randint(0, HUMAN_PARTS_CLASSES, (batch, size, size), generator=gen)
    parts[rand(batch, size, size) < 0.1] = IGNORE_INDEX
    depth = rand(*shape) * 5 * (rand(*shape) > 0.2)
    normals = F.normalize(torch.randn(batch, 3, size, size, generator=gen), dim=1)
    normals = normals * (rand(*shape) > 0.2)
    edges = (rand(*shape) > 0.8).float()
    edges[rand(*shape) < 0.1] = IGNORE_INDEX
    saliency = (rand(*shape) > 0.5).float()
    saliency[rand(*shape) < 0.1] = IGNORE_INDEX
    targets = {
        "semseg": semseg,
        "human_parts": parts,
        "depth": depth,
        "normals": normals,
        "edges": edges,
        "saliency": saliency,
    }
    preds = {
        "semseg": torch.randn(batch, NUM_CLASSES, size, size, generator=gen),
        "human_parts": torch.randn(batch, HUMAN_PARTS_CLASSES, size, size, generator=gen),
        "depth": rand(*shape) * 5,
        "normals": torch.randn(batch, 3, size, size, generator=gen),
        "edges": torch.randn(*shape, generator=gen),
        "saliency": torch.randn(*shape, generator=gen) * 2,
    }
    return preds, targets


def _tasks() -> dict:
    return {name: _task(name) for name in TASKS}


def _assert_same(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> None:
    assert a.keys() == b.keys()
    for task in a:
        assert a[task] == pytest.approx(b[task], rel=1e-9, abs=1e-12), task


def test_compute_returns_exactly_the_task_metric_names() -> None:
    preds, targets = _batch(1)
    meter = MultiTaskMeter(_tasks())
    meter.update(preds, targets)
    for name, values in meter.compute().items():
        assert list(values) == [m.name for m in _task(name).metrics]
        assert all(math.isfinite(v) for v in values.values())
        kpi = values[_task(name).kpi]
        assert 0 < kpi <= 1, (name, kpi)


def test_three_chunks_equal_one_update() -> None:
    preds, targets = _batch(2)
    whole = MultiTaskMeter(_tasks())
    whole.update(preds, targets)
    chunked = MultiTaskMeter(_tasks())
    for rows in torch.arange(6).split([1, 3, 2]):
        chunked.update(
            {k: v[rows] for k, v in preds.items()}, {k: v[rows] for k, v in targets.items()}
        )
    _assert_same(chunked.compute(), whole.compute())


@pytest.mark.parametrize("name", TASKS)
def test_state_round_trip_and_sum_of_halves(name: str) -> None:
    preds, targets = _batch(3)
    pred, target = preds[name], targets[name]
    whole = create_meter(_task(name))
    whole.update(pred, target)
    first, second = create_meter(_task(name)), create_meter(_task(name))
    first.update(pred[:2], target[:2])
    second.update(pred[2:], target[2:])

    state = first.state()
    assert state.dim() == 1 and state.dtype == torch.float64
    copy = create_meter(_task(name))
    copy.load_state(state)
    assert copy.compute() == first.compute()

    # What all_reduce(SUM) does across two ranks.
    reduced: TaskMeter = create_meter(_task(name))
    reduced.load_state(first.state() + second.state())
    assert reduced.compute() == pytest.approx(whole.compute(), rel=1e-9)
    # A meter that saw nothing still has a full-length (zero) state to reduce.
    assert create_meter(_task(name)).state().shape == state.shape


def test_load_state_rejects_a_wrong_length() -> None:
    with pytest.raises(ValueError, match="39 values"):  # 19 thresholds: 2 · 19 + 1 sums
        create_meter(_task("edges")).load_state(torch.zeros(4, dtype=torch.float64))


def test_unlabelled_samples_are_skipped_per_task() -> None:
    preds, targets = _batch(4)
    labelled = {"depth": torch.tensor([True, False, True, False, False, True])}
    meter = MultiTaskMeter({"depth": _task("depth"), "edges": _task("edges")})
    meter.update(preds, targets, labelled)

    rows = labelled["depth"]
    expected = create_meter(_task("depth"))
    expected.update(preds["depth"][rows], targets["depth"][rows])
    everything = create_meter(_task("edges"))
    everything.update(preds["edges"], targets["edges"])
    got = meter.compute()
    assert got["depth"] == pytest.approx(expected.compute())
    assert got["edges"] == pytest.approx(everything.compute())  # no mask → all labelled

    # A batch with nobody labelled for depth changes nothing.
    meter.update(preds, targets, {"depth": torch.zeros(6, dtype=torch.bool)})
    assert meter.compute()["depth"] == pytest.approx(expected.compute())


def test_all_reduce_is_a_no_op_without_a_process_group() -> None:
    preds, targets = _batch(5)
    meter = MultiTaskMeter(_tasks())
    meter.update(preds, targets)
    before = meter.compute()
    meter.all_reduce()
    assert meter.compute() == before


_WORKER = """
import json, os, sys, torch, torch.distributed as dist
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_metrics import _batch, _tasks
from study.metrics import MultiTaskMeter
rank = int(os.environ["RANK"])
dist.init_process_group("gloo", init_method={init!r}, rank=rank, world_size=2)
preds, targets = _batch(6)
rows = slice(0, 2) if rank == 0 else slice(2, None)
meter = MultiTaskMeter(_tasks())
meter.update({{k: v[rows] for k, v in preds.items()}}, {{k: v[rows] for k, v in targets.items()}})
meter.all_reduce()
print(json.dumps(meter.compute()))
dist.destroy_process_group()
"""


def test_all_reduce_over_two_gloo_ranks_equals_one_process(tmp_path: Path) -> None:
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

    preds, targets = _batch(6)
    single = MultiTaskMeter(_tasks())
    single.update(preds, targets)
    for result in results:
        _assert_same(result, single.compute())


def test_delta_m_by_hand_with_mixed_directions() -> None:
    tasks = {"semseg": _task("semseg"), "depth": _task("depth"), "normals": _task("normals")}
    single = {
        "semseg": {"miou": 0.4, "pixel_acc": 0.8},
        "depth": {"rmse": 1.0, "abs_rel": 0.2, "delta1": 0.5},
    }
    mtl = {
        "semseg": {"miou": 0.5, "pixel_acc": 0.8},  # +25 %, 0 → +12.5 % for the task
        "depth": {"rmse": 0.9, "abs_rel": 0.22, "delta1": 0.6},  # +10, −10, +20 → +6.67 %
        "normals": {"mean_angle": 20.0, "within_11_25": 0.3},  # no reference: left out
    }
    assert delta_m(mtl, single, tasks) == pytest.approx(100 * (0.125 + 0.2 / 3) / 2)
    # Lower-is-better alone: a worse rmse is a negative Δm.
    assert delta_m({"depth": {"rmse": 1.1}}, single, tasks) == pytest.approx(-10.0)


def test_delta_m_rejects_a_zero_reference_and_no_overlap() -> None:
    tasks = {"depth": _task("depth")}
    with pytest.raises(ValueError, match=r"depth\.rmse"):
        delta_m({"depth": {"rmse": 1.0}}, {"depth": {"rmse": 0.0}}, tasks)
    with pytest.raises(ValueError, match="no task"):
        delta_m({"depth": {"rmse": 1.0}}, {"semseg": {"miou": 0.5}}, tasks)


def test_delta_m_worked_example_one_metric_per_task() -> None:
    # Δm = 100/T Σ_t (−1)^{l_t} (M_t − M_b,t) / M_b,t over the headline metrics.
    tasks = {name: _task(name) for name in ("semseg", "depth", "edges")}
    single = {"semseg": {"miou": 0.40}, "depth": {"rmse": 0.50}, "edges": {"odsf": 0.50}}
    mtl = {"semseg": {"miou": 0.44}, "depth": {"rmse": 0.45}, "edges": {"odsf": 0.45}}
    # semseg +10 %, depth rmse −10 % (lower is better, so +10), edges −10 % → (10 + 10 − 10) / 3.
    assert delta_m(mtl, single, tasks) == pytest.approx(10 / 3)
