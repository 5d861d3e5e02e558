"""Every meter, its state and Δm on the stand-in device, against the same batch on the CPU."""

from __future__ import annotations

from typing import Any

import torch

from models.tasks import IGNORE_INDEX, get_task
from study.metrics import MultiTaskMeter, delta_m

NUM_CLASSES = 4
#: Every task with a meter, detection (gathered, not reduced) included.
TASKS = {
    name: get_task(name, NUM_CLASSES)
    for name in ("semseg", "human_parts", "depth", "normals", "edges", "saliency", "detection")
}


def _batch(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    b, h, w = 2, 16, 16

    def pred(channels: int) -> torch.Tensor:
        return torch.randn(b, channels, h, w, generator=g)

    semseg = torch.randint(0, NUM_CLASSES, (b, h, w), generator=g)
    semseg[:, 0] = IGNORE_INDEX
    parts = torch.randint(0, TASKS["human_parts"].channels, (b, h, w), generator=g)
    edges = (torch.rand(b, 1, h, w, generator=g) > 0.8).float()
    boxes = torch.tensor([[[1.0, 1.0, 8.0, 8.0, 1.0]], [[2.0, 3.0, 12.0, 9.0, 0.0]]])
    preds = {
        "semseg": pred(NUM_CLASSES),
        "human_parts": pred(TASKS["human_parts"].channels),
        "depth": pred(1).exp(),
        "normals": pred(3),
        "edges": pred(1),
        "saliency": pred(1),
        "detection": torch.randn(b, 30, 8 + NUM_CLASSES - 1, generator=g),
    }
    targets = {
        "semseg": semseg,
        "human_parts": parts,
        "depth": torch.rand(b, 1, h, w, generator=g) * 5,
        "normals": pred(3),
        "edges": edges,
        "saliency": (torch.rand(b, 1, h, w, generator=g) > 0.5).float(),
        "detection": boxes,
    }
    return preds, targets


def _measure(put: Any) -> tuple[MultiTaskMeter, dict[str, dict[str, float]]]:
    meter = MultiTaskMeter(TASKS)
    for seed in range(2):
        preds, targets = _batch(seed)
        labelled = {name: torch.tensor([True, seed == 0]) for name in TASKS}
        meter.update(
            {k: put(v) for k, v in preds.items()},
            {k: put(v) for k, v in targets.items()},
            {k: put(v) for k, v in labelled.items()},
        )
    return meter, meter.compute()


def test_meters_accumulate_on_the_device_of_the_batches(stand_in: Any) -> None:
    meter, metrics = _measure(stand_in.put)
    for name, task_meter in meter.meters.items():
        assert task_meter.state().device == stand_in.device, name
    assert meter.state().device == stand_in.device
    _, expected = _measure(lambda t: t)
    assert metrics.keys() == expected.keys()
    for name in metrics:
        torch.testing.assert_close(metrics[name], expected[name], equal_nan=True)


def test_a_reduced_state_loads_onto_the_device_the_meters_live_on(stand_in: Any) -> None:
    meter, metrics = _measure(stand_in.put)
    # What a gloo all-reduce hands back: the summed state, on the CPU.
    reduced = meter.state().cpu()
    meter.load_state(reduced)
    assert meter.state().device == stand_in.device
    assert meter.compute() == metrics
    meter.reset()
    assert meter.state().device == stand_in.device and float(meter.state().sum()) == 0


def test_delta_m_of_device_metrics(stand_in: Any) -> None:
    _, metrics = _measure(stand_in.put)
    dense = {k: v for k, v in metrics.items() if k not in ("detection", "human_parts")}
    tasks = {k: TASKS[k] for k in dense}
    assert delta_m(dense, dense, tasks) == 0.0
