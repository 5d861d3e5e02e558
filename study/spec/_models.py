"""The study spec: YAML validated as typed data, before Ray starts."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models import balancing, list_models, list_tasks
from search_spaces import SpaceOverride, one_line
from study.data import SYNTHETIC, SYNTHETIC_TASKS, dataset_names, get_format
from study.errors import UserError
from study.spec._objectives import ConstraintSpec, ObjectiveSpec

__all__ = [
    "DatasetSpec",
    "DeepSpeedSpec",
    "PartSpec",
    "SamplerSpec",
    "SchedulerSpec",
    "SpecError",
    "StageSpec",
    "StudySpec",
]


class SpecError(UserError):
    """A spec that cannot be run; its message is one line of at most 300 characters."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


#: Seeds are 32-bit: numpy's generators take no larger one.
MAX_SEED = 2**32 - 1
#: Upper bounds of the counts, far above any study yet small enough to refuse a typo
#: (``train_samples: 1.0e29``) before Ray starts rather than hang or exhaust memory.
MAX_SAMPLES = 10_000_000
MAX_TRIALS = 100_000
MAX_EPOCHS = 100_000
MAX_WORKERS = 4096


def unknown_names(kind: str, names: Sequence[str], known: Sequence[str]) -> str | None:
    """``unknown <kind> 'x'; did you mean 'y'?`` for the first of ``names`` not in
    ``known`` (None: all are known), listing the choices when none is close."""
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, list(known), n=1)
        got = name if len(name) <= 60 else name[:59] + "…"
        if close:
            return f"unknown {kind} {got!r}; did you mean {close[0]!r}?"
        return f"unknown {kind} {got!r}; expected one of {', '.join(known)}"
    return None


def _known_dataset(name: str) -> str:
    problem = unknown_names("dataset", [name], dataset_names())
    if problem is not None:
        raise ValueError(problem)
    return name


def _plain_path(text: str) -> str:
    """A path or URI as typed in a spec: one line, no control characters, each part
    short enough for a filesystem (255 bytes)."""
    if not text.strip():
        raise ValueError("expected a path, got an empty string")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("expected a path without newlines or control characters")
    longest = max(len(part.encode()) for part in text.split("/"))
    if longest > 255:
        raise ValueError(f"a path component of {longest} bytes; expected at most 255")
    return text


#: A folder or file named by a spec.
PathText = Annotated[str, StringConstraints(max_length=4096), AfterValidator(_plain_path)]
#: A model argument; a string is a name or a path, never a document.
ModelArg = Annotated[str, StringConstraints(max_length=4096)] | int | float | bool


#: ``synthetic`` or a registered on-disk format (:func:`study.data.dataset_names`).
DatasetName = Annotated[str, AfterValidator(_known_dataset)]


class _Strict(BaseModel):
    # A string "inf" or "nan" would otherwise parse as a float.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PartSpec(_Strict):
    """One part of a partially labelled mix: its own images, some tasks labelled.

    A synthetic part renders ``train_samples`` and ``val_samples`` scenes of its own; a part
    on disk (a registered format with a ``root``) reads that folder's splits.
    """

    name: DatasetName = SYNTHETIC
    root: PathText | None = None
    tasks: tuple[str, ...] = Field(min_length=1, max_length=32)
    train_samples: int | None = Field(None, ge=1, le=MAX_SAMPLES)
    val_samples: int | None = Field(None, ge=1, le=MAX_SAMPLES)

    @model_validator(mode="after")
    def _labels_its_tasks(self) -> PartSpec:
        if self.name == SYNTHETIC:
            if self.root is not None or self.train_samples is None or self.val_samples is None:
                raise ValueError("a synthetic part has train_samples and val_samples, no root")
            labelled = SYNTHETIC_TASKS
        else:
            if self.root is None:
                raise ValueError(f"a {self.name} part needs 'root', the dataset's folder")
            labelled = get_format(self.name).tasks
        unknown = [t for t in self.tasks if t not in labelled]
        if unknown:
            raise ValueError(f"{self.name} does not label {unknown}")
        return self


class DatasetSpec(_Strict):
    name: DatasetName = SYNTHETIC
    #: The dataset's folder (a registered format), relative to the spec's folder.
    root: PathText | None = None
    image_size: int = Field(64, ge=16, le=1024)
    num_classes: int = Field(5, ge=2, le=256)
    train_samples: int = Field(256, ge=1, le=MAX_SAMPLES)
    val_samples: int = Field(64, ge=1, le=MAX_SAMPLES)
    max_objects: int = Field(4, ge=1, le=32)
    #: A mix of partially labelled parts (synthetic only); their sample counts replace
    #: ``train_samples`` and ``val_samples``.
    parts: tuple[PartSpec, ...] | None = Field(None, max_length=64)
    #: ``balanced`` draws every batch equally from each part; ``shuffled`` ignores parts.
    sampler: Literal["shuffled", "balanced"] = "shuffled"

    @model_validator(mode="after")
    def _real_dataset(self) -> DatasetSpec:
        if self.name == SYNTHETIC:
            if self.root is not None:
                raise ValueError("a synthetic dataset has no root")
            for part in self.parts or ():
                classes = part.name != SYNTHETIC and get_format(part.name).num_classes
                counted = {"semseg", "detection"} & set(part.tasks)
                if classes and counted and classes != self.num_classes:
                    raise ValueError(
                        f"the {part.name} part's {sorted(counted)} have {classes} classes; "
                        f"set num_classes: {classes}"
                    )
            return self
        if self.parts is not None:
            raise ValueError("a mix of parts takes no name: each part names its dataset")
        if self.root is None:
            raise ValueError(f"{self.name} needs 'root', the dataset's folder")
        classes = get_format(self.name).num_classes
        if self.num_classes != classes:
            raise ValueError(f"{self.name} has {classes} classes; set num_classes: {classes}")
        return self

    def tasks(self) -> tuple[str, ...]:
        """The tasks this dataset labels (in some of its samples, for a mix)."""
        if self.parts is not None:
            return tuple(dict.fromkeys(t for part in self.parts for t in part.tasks))
        return SYNTHETIC_TASKS if self.name == SYNTHETIC else get_format(self.name).tasks


class SchedulerSpec(_Strict):
    """Early stopping: ``asha`` (default), ``hyperband``, ``median`` (stop a trial below
    the median of the others at the same epoch, after ``grace_period``), or ``fifo``."""

    name: Literal["asha", "hyperband", "median", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1, le=MAX_EPOCHS)
    reduction_factor: float = Field(2.0, gt=1, le=100)


class SamplerSpec(_Strict):
    """How Optuna proposes trials: ``grid`` runs every combination of the methods and the
    categorical choices once, each at its default numeric hyperparameters."""

    #: ``nsga2`` is Optuna's genetic sampler for multi-objective studies (TPE serves both).
    name: Literal["tpe", "random", "grid", "nsga2"] = "tpe"
    #: TPE: random trials before it models the results (default: half the study's
    #: trials, 2 to 10).
    startup_trials: int | None = Field(None, ge=1, le=MAX_TRIALS)
    #: TPE: one joint density over the parameters sampled together, not one per parameter.
    multivariate: bool = False
    #: TPE: running trials count as bad ones, so trials that run at once spread out.
    constant_liar: bool = False

    @model_validator(mode="after")
    def _tpe_options(self) -> SamplerSpec:
        chosen = [
            name
            for name, value in (
                ("startup_trials", self.startup_trials is not None),
                ("multivariate", self.multivariate),
                ("constant_liar", self.constant_liar),
            )
            if value
        ]
        if chosen and self.name != "tpe":
            raise ValueError(f"{', '.join(chosen)}: options of the tpe sampler, not {self.name}")
        return self


class StageSpec(_Strict):
    """One stage of a staged study (``vit_sharing``): a set of trials training ``task`` in
    ``step``, each starting from the best model of the stage before it."""

    step: Literal["base", "gates", "masked", "delta_act"]
    task: str = Field(max_length=64)
    trials: int = Field(1, ge=1, le=MAX_TRIALS)
    #: Epochs of this stage's trials (default: the study's ``epochs``).
    epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)
    #: This stage's own ranges for some of the search space's ``optim``/``model``
    #: parameters, e.g. ``{optim: {lr: {type: float, low: 5.0e-4, high: 1.5e-3}}}``.
    space: SpaceOverride | None = None

    @property
    def name(self) -> str:
        return f"{self.task}-{self.step}"


class DeepSpeedSpec(_Strict):
    zero_stage: int = Field(0, ge=0, le=3)
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="after")
    def _bf16_stage(self) -> DeepSpeedSpec:
        if self.precision == "bf16" and self.zero_stage not in (0, 2):
            raise ValueError("bf16 runs with zero_stage 0 or 2")
        return self


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    dataset: DatasetSpec = DatasetSpec()
    tasks: list[str] = Field(min_length=1, max_length=32)
    #: The architecture, or with ``architectures`` the single-task baselines' one (Δm's
    #: reference for every architecture searched).
    architecture: str = "hard_sharing"
    model: dict[str, ModelArg] = Field({}, max_length=64)
    #: Architectures searched jointly with the methods, each with its own fixed model
    #: arguments (they take the place of ``model`` for that architecture).
    architectures: dict[str, dict[str, ModelArg]] | None = Field(None, max_length=32)
    #: Model arguments of the single-task baselines, over ``model`` and the search space's
    #: (e.g. ``{variant: conv}``: RCM's Δm is against plain single-task ResNets).
    baseline_model: dict[str, ModelArg] = Field({}, max_length=64)
    methods: list[str] | None = Field(None, min_length=1, max_length=256)
    gradient_space: Literal["params", "representation"] = "params"
    potentials: dict[str, float] | None = None
    search_space: PathText = "default"
    #: Configurations the sampler proposes; each runs ``repeats`` times.
    trials: int = Field(8, ge=1, le=MAX_TRIALS)
    #: Seeds per configuration (``seed``, ``seed + 1``, …): its trials are grouped by
    #: ``config_id`` and the sampler is told their mean.
    repeats: int = Field(1, ge=1, le=100)
    #: What the search optimises; several make a multi-objective study with a Pareto
    #: front (default: Δm, or the validation loss without baselines).
    objectives: tuple[ObjectiveSpec, ...] | None = Field(None, min_length=1, max_length=16)
    #: Caps on reported measures; trials outside them are recorded as infeasible.
    constraints: tuple[ConstraintSpec, ...] = Field((), max_length=16)
    concurrency: int = Field(2, ge=1, le=MAX_WORKERS)
    cpus_per_trial: float = Field(1.0, gt=0, le=MAX_WORKERS)
    #: Data-parallel workers per trial (a Ray Train TorchTrainer with DeepSpeed at that
    #: world size, ``cpus_per_trial`` CPUs each); 1 trains in the trial's own process.
    workers_per_trial: int = Field(1, ge=1, le=MAX_WORKERS)
    sampler: SamplerSpec = SamplerSpec()
    #: Start with each method at the search space's defaults (the papers' settings), one
    #: trial per method, before the sampler proposes its own.
    warm_start: bool = False
    scheduler: SchedulerSpec = SchedulerSpec()
    #: Epochs of a trial; with ``incremental``, epochs of each task in turn.
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    #: Train the tasks one after another, each added to the trained model with every
    #: earlier task frozen (architectures with ``add_task``, such as ``rcm_resnet``).
    incremental: bool = False
    #: Staged training (``vit_sharing``): the base task, then each sub-task's steps.
    stages: tuple[StageSpec, ...] | None = Field(None, max_length=256)
    batch_size: int = Field(32, ge=1, le=65_536)
    #: Δm's single-task baselines: ``auto`` takes them from the results store and trains
    #: the missing ones first; ``store`` requires them there; ``none`` optimises val_loss.
    baselines: Literal["auto", "store", "none"] = "auto"
    deepspeed: DeepSpeedSpec = DeepSpeedSpec()
    max_failures: int = Field(1, ge=0, le=MAX_TRIALS)
    #: A local folder (relative to the working directory) or a URI such as ``s3://…``.
    results: PathText = "results"

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, tasks: list[str]) -> list[str]:
        problem = unknown_names("task", tasks, list_tasks())
        if problem is not None:
            raise ValueError(problem)
        if len(set(tasks)) != len(tasks):
            raise ValueError("a task is listed twice")
        return tasks

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, methods: list[str] | None) -> list[str] | None:
        problem = unknown_names("method", methods or [], balancing.list_methods())
        if problem is not None:
            raise ValueError(problem)
        if methods is not None and len(set(methods)) != len(methods):
            raise ValueError("a method is listed twice")
        return methods

    @model_validator(mode="after")
    def _seeds_fit(self) -> StudySpec:
        # Repeats run seeds seed, seed + 1, …; the last must still be a 32-bit seed.
        if self.seed + self.repeats - 1 > MAX_SEED:
            raise ValueError(
                f"seed {self.seed} with repeats {self.repeats} runs seeds past {MAX_SEED}; "
                f"expected seed <= {MAX_SEED - self.repeats + 1}"
            )
        return self

    @model_validator(mode="after")
    def _dataset_labels_tasks(self) -> StudySpec:
        unlabelled = [t for t in self.tasks if t not in self.dataset.tasks()]
        if unlabelled:
            raise ValueError(
                f"dataset {self.dataset.name!r} does not label {unlabelled}; "
                f"expected some of {list(self.dataset.tasks())}"
            )
        return self

    @field_validator("potentials")
    @classmethod
    def _potentials_of_tasks(
        cls, potentials: dict[str, float] | None, info: ValidationInfo
    ) -> dict[str, float] | None:
        for task, value in (potentials or {}).items():
            if task not in info.data.get("tasks", []):
                raise ValueError(f"{task!r} is not one of the study's tasks")
            if not 0 < value <= 1:
                raise ValueError(f"{task!r} is {value}; expected a KPI in (0, 1]")
        return potentials

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, name: str) -> str:
        problem = unknown_names("architecture", [name], list_models())
        if problem is not None:
            raise ValueError(problem)
        return name

    @field_validator("architectures")
    @classmethod
    def _known_architectures(
        cls, architectures: dict[str, dict[str, ModelArg]] | None
    ) -> dict[str, dict[str, ModelArg]] | None:
        problem = unknown_names("architecture", list(architectures or {}), list_models())
        if problem is not None:
            raise ValueError(problem)
        if architectures is not None and not architectures:
            raise ValueError("expected at least one architecture")
        return architectures

    @property
    def searched_architectures(self) -> dict[str, dict[str, str | int | float | bool]]:
        """Each architecture multi-task trials train, with its fixed model arguments."""
        return dict(self.architectures or {self.architecture: self.model})

    def model_args(self, architecture: str) -> dict[str, str | int | float | bool]:
        return dict(self.searched_architectures.get(architecture, self.model))

    @property
    def total_epochs(self) -> int:
        """Epochs a multi-task trial runs (and reports) in all."""
        return self.epochs * (len(self.tasks) if self.incremental else 1)

    @property
    def search_objectives(self) -> list[tuple[str, Literal["min", "max"]]]:
        """The metrics Optuna optimises, with their modes."""
        if self.stages is not None:
            return [("stage_kpi", "max")]  # the KPI of the task a stage trains
        if self.objectives is not None:
            return [(o.metric, o.direction) for o in self.objectives]
        return [("val_loss", "min") if self.baselines == "none" else ("delta_m", "max")]

    @property
    def objective(self) -> tuple[str, Literal["min", "max"]]:
        """The first objective: what the scheduler stops on and progress shows."""
        return self.search_objectives[0]

    def stage_epochs(self, stage: StageSpec) -> int:
        return stage.epochs or self.epochs

    @property
    def dataset_key(self) -> str:
        """Names the data itself: trials with equal keys saw the same images and labels."""
        d = self.dataset
        if d.name != "synthetic":
            return f"{d.name}:{d.root}:{d.image_size}px"
        return (
            f"synthetic:{d.image_size}px:{d.num_classes}c:{d.train_samples}+{d.val_samples}:"
            f"{d.max_objects}obj:seed{self.seed}"
            + (
                ""
                if d.parts is None
                else ":"
                + ";".join(
                    f"{'+'.join(p.tasks)}/{p.train_samples}+{p.val_samples}" for p in d.parts
                )
            )
        )
