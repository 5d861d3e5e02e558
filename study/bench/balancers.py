"""Training-step time of every balancing method relative to ``ew``, same model and batch."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from models import balancing, create_model
from study.bench._torchjd import AGGREGATORS, has_torchjd, torchjd_step
from study.data import SYNTHETIC_TASKS
from study.errors import UserError
from study.run import TrialRunner, TrialSetup
from study.spec import DatasetSpec, StudySpec

__all__ = ["measure_balancers"]

#: Methods on the Jacobian that read either gradient space.
_BOTH_SPACES = ("graddrop",)


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
    compare_torchjd: bool = False,
) -> dict[str, Any]:
    """Median step time per method (and gradient space), interleaved round by round so
    drift in the machine's speed hits every method alike. With ``compare_torchjd``, also
    torchjd's step on the same network for each method it has (``torchjd:<method>``)."""
    if compare_torchjd and not has_torchjd():
        raise UserError("--compare-torchjd needs torchjd: pip install torchjd")
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
            spaces = ["params"]
            if gradients == "shared" or method in _BOTH_SPACES:
                spaces.append("representation")
            for space in spaces:
                key = method if space == "params" else f"{method}/representation"
                runners[key] = _runner(spec, method, space, potentials)
        batch = runners["ew"].train
        images, targets = batch.images, batch.targets
        stepping: dict[str, Callable[[], object]] = {
            key: _stepper(runner, images, targets) for key, runner in runners.items()
        }
        if compare_torchjd:
            for method in AGGREGATORS:
                if method in runners:
                    stepping[f"torchjd:{method}"] = _torchjd_stepper(
                        runners[method], images, targets
                    )
        times: dict[str, list[float]] = {key: [] for key in stepping}
        for round_ in range(rounds + 1):
            for key, step in stepping.items():
                started = time.perf_counter()
                for _ in range(steps):
                    step()
                if round_ > 0:  # the first round warms caches and allocators
                    times[key].append((time.perf_counter() - started) / steps)
        base = statistics.median(times["ew"])
        figures["tasks"][count] = {
            key: {
                "step_ms": 1e3 * statistics.median(t),
                "vs_ew": statistics.median(t) / base,
                "weights_ms": 1e3 * _weights_time(runners[key].balancer, count)
                if key in runners
                else None,
            }
            for key, t in times.items()
        }
    return figures


def _stepper(runner: TrialRunner, images: torch.Tensor, targets: Any) -> Callable[[], object]:
    def step() -> object:
        runner.engine.train()
        return runner.train_step(images, targets)

    return step


def _torchjd_stepper(runner: TrialRunner, images: torch.Tensor, targets: Any) -> Callable[[], None]:
    """torchjd's step on a fresh copy of the runner's network (same architecture and size)."""
    model = create_model(
        runner.architecture,
        list(runner.tasks),
        num_classes=runner.setup.spec.dataset.num_classes,
        **runner.model_kw,
    )
    model.train()
    tasks = [runner.tasks[name] for name in runner.tasks]

    def losses(preds: Any) -> list[torch.Tensor]:
        return [task.loss(preds[task.name].float(), targets[task.name]) for task in tasks]

    step = torchjd_step(model, runner.config["method"], losses)
    return lambda: step(images)


def _weights_time(balancer: balancing.Balancer, count: int, calls: int = 20) -> float:
    """Mean time of the method's own work on a step's losses (and a Gramian or a
    Jacobian): its solver."""
    generator = torch.Generator().manual_seed(0)
    jacobian = torch.randn(count, 256, generator=generator, dtype=torch.float64)
    gramian = jacobian @ jacobian.T
    losses = torch.rand(count, generator=generator) + 0.1
    started = time.perf_counter()
    for _ in range(calls):
        if balancer.gradients == "jacobian":
            balancer.direction(losses, jacobian)
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
            solver = "-" if cell["weights_ms"] is None else f"{cell['weights_ms']:.3f}"
            row += f"{cell['step_ms']:11.1f}{cell['vs_ew']:7.2f}{solver:>11s}"
        lines.append(row)
    return "\n".join(lines)
