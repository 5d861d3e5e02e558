"""All of a trial's tasks at once, their single all-reduce, and Δm."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from models.tasks import Task
from study.metrics._ap import DetectionProtocol
from study.metrics._dense import DepthMeter, NormalsMeter, SemsegMeter
from study.metrics._detection import DetectionMeter
from study.metrics._edges import EDGE_MAX_DIST, EDGE_THRESHOLDS, EdgesMeter
from study.metrics._meter import _F64, TaskMeter
from study.metrics._saliency import SaliencyMeter

__all__ = ["MetricOptions", "MultiTaskMeter", "create_meter", "delta_m"]


@dataclass(frozen=True)
class MetricOptions:
    """How the tasks are scored where benchmarks differ (the spec's ``metrics``)."""

    detection_protocol: DetectionProtocol = "coco"  # see DetectionMeter
    edge_max_dist: float = EDGE_MAX_DIST  # fraction of the image diagonal, see EdgesMeter
    edge_thresholds: int = EDGE_THRESHOLDS
    max_depth: float | None = None  # metres; None scores every labelled pixel


_METERS: dict[str, type[TaskMeter]] = {
    "semseg": SemsegMeter,
    "human_parts": SemsegMeter,
    "depth": DepthMeter,
    "normals": NormalsMeter,
    "edges": EdgesMeter,
    "saliency": SaliencyMeter,
}


def create_meter(task: Task, options: MetricOptions | None = None) -> TaskMeter:
    """The meter for ``task`` (by its name), scoring by ``options`` (default: the defaults)."""
    if task.name not in _METERS:
        raise ValueError(f"no meter for task {task.name!r}; expected one of {sorted(_METERS)}")
    options = options or MetricOptions()
    if task.name == "edges":
        return EdgesMeter(task, options.edge_max_dist, options.edge_thresholds)
    if task.name == "depth":
        return DepthMeter(task, options.max_depth)
    return _METERS[task.name](task)


class MultiTaskMeter:
    """One meter per task, updated together; fixed-size states reduce in one collective.

    Detection keeps a record per detection, so its meter is gathered instead.
    """

    def __init__(self, tasks: Mapping[str, Task], options: MetricOptions | None = None) -> None:
        options = options or MetricOptions()
        self.meters: dict[str, TaskMeter] = {
            name: create_meter(t, options) for name, t in tasks.items() if name != "detection"
        }
        self.gathered: dict[str, DetectionMeter] = {
            name: DetectionMeter(t.channels, options.detection_protocol)
            for name, t in tasks.items()
            if name == "detection"
        }

    def update(
        self,
        preds: Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
        labelled: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        """Fold in one batch; ``labelled[task]`` (B,) bool drops unlabelled samples."""
        meters = {**self.meters, **self.gathered}
        missing = [n for n in meters if n not in preds or n not in targets]
        if missing:
            raise ValueError(f"update: no prediction or target for task(s) {missing}")
        for name, meter in meters.items():
            pred, target = preds[name], targets[name]
            mask = None if labelled is None else labelled.get(name)
            if mask is not None:
                mask = mask.to(device=pred.device, dtype=torch.bool).reshape(-1)
                pred, target = pred[mask], target[mask.to(target.device)]
            meter.update(pred, target)

    def compute(self) -> dict[str, dict[str, float]]:
        meters = {**self.meters, **self.gathered}
        return {name: meter.compute() for name, meter in meters.items()}

    def state(self) -> torch.Tensor:
        """Every meter's state, concatenated in task order."""
        states = [m.state() for m in self.meters.values()]
        if not states:
            return torch.zeros(0, dtype=_F64, device="cpu")
        return torch.cat([s.to(states[0].device) for s in states])

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
        for meter in self.gathered.values():
            meter.all_gather()
        state = self.state().to(_collective_device())
        dist.all_reduce(state, op=dist.ReduceOp.SUM)
        self.load_state(state)

    def reset(self) -> None:
        for meter in [*self.meters.values(), *self.gathered.values()]:
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
    With one metric per task this is exactly Δm = 100/T · Σ_t (−1)^{l_t} (M_t − M_b,t) / M_b,t;
    a task reported with several metrics counts once, as the mean of its metrics' terms.
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
