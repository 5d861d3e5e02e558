"""Training-step time of every balancing method relative to ``ew``, same model and batch."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch

from models import balancing
from study.data import SYNTHETIC_TASKS
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec

__all__ = ["measure_balancers"]


def _runner(spec: StudySpec, method: str, space: str, potentials: dict[str, float]) -> TrialRunner:
    setup = TrialSetup(
        spec=spec.model_copy(update={"gradient_space": space}),
        tasks=tuple(spec.tasks),
        potentials=potentials,
    )
    runner = TrialRunner(setup, {"method": method})
    if runner.balancer.uses_kpis:
        runner.balancer.update_kpis({t: 0.3 + 0.1 * i for i, t in enumerate(spec.tasks)})
    return runner


def measure_balancers(
    num_tasks: tuple[int, ...] = (3, 5),
    methods: list[str] | None = None,
    image_size: int = 64,
    batch_size: int = 16,
    rounds: int = 5,
    steps: int = 3,
    threads: int | None = None,
) -> dict[str, Any]:
    """Median step time per method (and gradient space), interleaved round by round so
    drift in the machine's speed hits every method alike."""
    if threads is not None:
        torch.set_num_threads(threads)
    methods = methods or balancing.list_methods()
    figures: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {torch.get_num_threads()} threads",
        "device": "cpu",
        "image_size": image_size,
        "batch_size": batch_size,
        "tasks": {},
    }
    for count in num_tasks:
        tasks = list(SYNTHETIC_TASKS[:count])
        if len(tasks) < count:
            raise ValueError(
                f"synthetic scenes have {len(SYNTHETIC_TASKS)} tasks, asked for {count}"
            )
        spec = StudySpec(
            name="bench",
            tasks=tasks,
            dataset=DatasetSpec(image_size=image_size, train_samples=batch_size, val_samples=1),
            batch_size=batch_size,
        )
        potentials = {t: 0.8 for t in tasks}
        runners: dict[str, TrialRunner] = {}
        for method in methods:
            gradients = balancing.create(method, tasks, **_kpi_args(method, potentials)).gradients
            spaces = ["params", "representation"] if gradients == "shared" else ["params"]
            for space in spaces:
                key = method if space == "params" else f"{method}/representation"
                runners[key] = _runner(spec, method, space, potentials)
        batch = runners["ew"].train
        images, targets = batch.images, batch.targets
        times: dict[str, list[float]] = {key: [] for key in runners}
        for round_ in range(rounds + 1):
            for key, runner in runners.items():
                runner.engine.train()
                started = time.perf_counter()
                for _ in range(steps):
                    runner.train_step(images, targets)
                if round_ > 0:  # the first round warms caches and allocators
                    times[key].append((time.perf_counter() - started) / steps)
        base = statistics.median(times["ew"])
        figures["tasks"][count] = {
            key: {
                "step_ms": 1e3 * statistics.median(t),
                "vs_ew": statistics.median(t) / base,
                "weights_ms": 1e3 * _weights_time(runners[key].balancer, count),
            }
            for key, t in times.items()
        }
    return figures


def _weights_time(balancer: balancing.Balancer, count: int, calls: int = 20) -> float:
    """Mean time of the method's own work on a step's losses (and a Gramian): its solver."""
    generator = torch.Generator().manual_seed(0)
    jacobian = torch.randn(count, 256, generator=generator, dtype=torch.float64)
    gramian = jacobian @ jacobian.T
    losses = torch.rand(count, generator=generator) + 0.1
    started = time.perf_counter()
    for _ in range(calls):
        balancer.weights(losses, gramian)
    return (time.perf_counter() - started) / calls


def _kpi_args(method: str, potentials: dict[str, float]) -> dict[str, Any]:
    return {"potentials": potentials} if "potentials" in balancing.defaults(method) else {}


def format_table(figures: dict[str, Any]) -> str:
    """One row per method, one column pair per task count."""
    counts = list(figures["tasks"])
    keys = list(figures["tasks"][counts[0]])
    header = f"{'method':28s}" + "".join(
        f"{f'T={c} ms':>11s}{'× ew':>7s}{'solver ms':>11s}" for c in counts
    )
    lines = [figures["machine"], header]
    for key in keys:
        row = f"{key:28s}"
        for count in counts:
            cell = figures["tasks"][count].get(key)
            row += f"{cell['step_ms']:11.1f}{cell['vs_ew']:7.2f}{cell['weights_ms']:11.3f}"
        lines.append(row)
    return "\n".join(lines)
