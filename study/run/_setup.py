"""What every trial of one phase of a study shares, and what each config decides: the
tasks, the architecture and its arguments, the balancer, and the repeat's seed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from models import Task, balancing, get_task
from study.metrics import MetricOptions
from study.spec import StageSpec, StudySpec

__all__ = ["TrialKind", "TrialSetup", "checkpoint_epochs"]

TrialKind = Literal["multi_task", "single_task"]


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one phase of a study shares; the sampled config comes apart."""

    spec: StudySpec
    tasks: tuple[str, ...]
    kind: TrialKind = "multi_task"
    references: Mapping[str, Mapping[str, float]] | None = field(default=None)
    baseline_trials: Mapping[str, str] | None = field(default=None)
    potentials: Mapping[str, float] | None = field(default=None)
    #: A staged study's stage; its trials start from ``init_from`` (a model state file)
    #: and leave their model under ``models_dir`` for the next stage.
    stage: StageSpec | None = field(default=None)
    init_from: str | None = field(default=None)
    models_dir: str | None = field(default=None)

    @property
    def epochs(self) -> int:
        """Epochs each trial of this phase runs in all."""
        if self.stage is not None:
            return self.spec.stage_epochs(self.stage)
        return self.spec.total_epochs if self.kind == "multi_task" else self.spec.epochs

    @property
    def checkpoint_epochs(self) -> frozenset[int]:
        """The epochs after which a trial of this phase saves a checkpoint (a restarted or
        resumed trial goes on from the last one), always including its last."""
        return checkpoint_epochs(self.spec, self.epochs)

    @property
    def incremental(self) -> bool:
        return self.kind == "multi_task" and self.spec.incremental

    def model_for(self, config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """The architecture a config trains and its arguments: the sampled ones under what
        the spec fixes, except a baseline's, whose ``baseline_model`` is in its config."""
        architecture = config.get("architecture", self.spec.architecture)
        sampled = dict(config.get("model", {}))
        if self.kind == "single_task":
            return architecture, {**self.spec.model, **sampled}
        return architecture, {**sampled, **self.spec.model_args(architecture)}

    def seed_for(self, config: Mapping[str, Any]) -> int:
        """The seed of a config's repeat (the data stays the spec's seed's)."""
        return self.spec.seed + int(config.get("repeat", 0))

    def tasks_for(self, config: Mapping[str, Any]) -> tuple[str, ...]:
        """A single-task trial trains the one task its config names."""
        return (config["task"],) if self.kind == "single_task" else self.tasks

    def task_records(self, config: Mapping[str, Any]) -> dict[str, Task]:
        """The task records of the tasks this config trains, in order."""
        classes = self.spec.dataset.num_classes
        return {name: get_task(name, classes) for name in self.tasks_for(config)}

    @property
    def metric_options(self) -> MetricOptions:
        """How this study scores its tasks: the spec's ``metrics``, resolved for its data."""
        return MetricOptions(**self.spec.metrics.for_dataset(self.spec.dataset).model_dump())

    def balancer_for(self, config: Mapping[str, Any], tasks: tuple[str, ...]) -> balancing.Balancer:
        """The balancing method a config samples, with its hyperparameters, seeded by the
        config's repeat (RLW's and PCGrad's draws replay on a resume)."""
        method = config.get("method", "ew")
        hp = dict(config.get(method, {}))
        if "potentials" in balancing.defaults(method):
            hp["potentials"] = self.potentials
        balancer = balancing.create(method, tasks, **hp)
        balancer.generator.manual_seed(self.seed_for(config))
        return balancer


def checkpoint_epochs(spec: StudySpec, epochs: int) -> frozenset[int]:
    """Where trials of ``epochs`` epochs checkpoint: every ``checkpoint_every`` epochs as the
    spec says; by default where the scheduler decides (ASHA's rungs at grace × η^k; every
    epoch under HyperBand, which pauses trials and resumes them from one), at least every
    quarter of the epochs so a failure loses no more, and always the last."""
    if spec.checkpoint_every is not None:
        every = spec.checkpoint_every
        return frozenset(range(every, epochs, every)) | {epochs}
    scheduler = spec.scheduler
    if scheduler.name == "hyperband":
        return frozenset(range(1, epochs + 1))
    quarter = math.ceil(epochs / 4)
    chosen = set(range(quarter, epochs, quarter)) | {epochs}
    if scheduler.name == "asha":
        rung = float(min(scheduler.grace_period, epochs))
        while rung < epochs:
            chosen.add(math.ceil(rung))
            rung *= scheduler.reduction_factor
    return frozenset(chosen)
