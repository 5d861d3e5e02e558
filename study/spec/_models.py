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

    name: DatasetName = Field(
        SYNTHETIC, description="`synthetic`, or a registered format on disk such as `voc`"
    )
    root: PathText | None = Field(
        None, description="a part on disk: its folder, relative to the spec's folder"
    )
    tasks: tuple[str, ...] = Field(
        min_length=1, max_length=32, description="the tasks this part labels"
    )
    train_samples: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="a synthetic part: the training scenes it renders"
    )
    val_samples: int | None = Field(
        None, ge=1, le=MAX_SAMPLES, description="a synthetic part: the validation scenes it renders"
    )

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
    """The images a study trains on: synthetic scenes, a registered format on disk
    (``nyud``, ``pascal``) or a mix of partially labelled parts."""

    name: DatasetName = Field(
        SYNTHETIC,
        description="`synthetic` or a registered format on disk (`nyud`, `pascal`, with `root`)",
    )
    root: PathText | None = Field(
        None, description="the dataset's folder (a format on disk), relative to the spec's folder"
    )
    image_size: int = Field(
        64, ge=16, le=1024, description="pixels a side; on disk the training crop and eval resize"
    )
    num_classes: int = Field(
        5, ge=2, le=256, description="segmentation and detection classes (nyud 40, pascal 21)"
    )
    train_samples: int = Field(256, ge=1, le=MAX_SAMPLES, description="synthetic training scenes")
    val_samples: int = Field(64, ge=1, le=MAX_SAMPLES, description="synthetic validation scenes")
    max_objects: int = Field(4, ge=1, le=32, description="synthetic: most objects in a scene")
    parts: tuple[PartSpec, ...] | None = Field(
        None,
        max_length=64,
        description="a mix of partially labelled parts (with `name` left `synthetic`); "
        "their sample counts replace `train_samples` and `val_samples`",
    )
    sampler: Literal["shuffled", "balanced"] = Field(
        "shuffled",
        description="`balanced` draws every batch equally from each part; `shuffled` ignores parts",
    )

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

    name: Literal["asha", "hyperband", "median", "fifo"] = Field(
        "asha", description="the early-stopping rule; `fifo` stops no trial"
    )
    grace_period: int = Field(
        1, ge=1, le=MAX_EPOCHS, description="`asha`, `median`: epochs before a trial may be stopped"
    )
    reduction_factor: float = Field(
        2.0, gt=1, le=100, description="`asha`, `hyperband`: how sharply each rung cuts the trials"
    )


class SamplerSpec(_Strict):
    """How Optuna proposes trials: ``grid`` runs every combination of the methods and the
    categorical choices once, each at its default numeric hyperparameters."""

    name: Literal["tpe", "random", "grid", "nsga2"] = Field(
        "tpe",
        description="`nsga2` is Optuna's genetic sampler for several objectives (TPE serves "
        "one or several); `grid` needs `trials` equal to the grid's size",
    )
    startup_trials: int | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS,
        description="TPE: random trials before it models the results "
        "(null: half the study's trials, 2 to 10)",
    )
    multivariate: bool = Field(
        False, description="TPE: one joint density over the parameters sampled together"
    )
    constant_liar: bool = Field(
        False, description="TPE: running trials count as bad, so concurrent ones spread out"
    )

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

    step: Literal["base", "gates", "masked", "delta_act"] = Field(
        description="`base` trains the base task; a sub-task's `gates` (ΔW with L0 gates), "
        "`masked` (the mask fixed), `delta_act` (plus the delta-activation penalty)"
    )
    task: str = Field(max_length=64, description="the task this stage trains")
    trials: int = Field(1, ge=1, le=MAX_TRIALS, description="the stage's trials")
    epochs: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs of this stage's trials (null: the study's `epochs`)",
    )
    space: SpaceOverride | None = Field(
        None,
        description="the stage's own ranges for some of the space's `optim`/`model` "
        "parameters, e.g. `{optim: {lr: {type: float, low: 5.0e-4, high: 1.5e-3, "
        "default: 1.0e-3}}}`",
    )

    @property
    def name(self) -> str:
        return f"{self.task}-{self.step}"


class DeepSpeedSpec(_Strict):
    """DeepSpeed's settings for a trial's training."""

    zero_stage: int = Field(
        0, ge=0, le=3, description="ZeRO stage; gradient-level methods need 0 to 2"
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="`bf16` runs with `zero_stage` 0 or 2"
    )

    @model_validator(mode="after")
    def _bf16_stage(self) -> DeepSpeedSpec:
        if self.precision == "bf16" and self.zero_stage not in (0, 2):
            raise ValueError("bf16 runs with zero_stage 0 or 2")
        return self


class OptimizerSpec(_Strict):
    """The optimiser's fixed choices. Its numbers are the search space's `optim` section
    (`lr`, `weight_decay`, and for SGD `momentum`), which wins over a value here."""

    name: Literal["adamw", "adam", "sgd"] = Field(
        "adamw",
        description="`sgd` runs with `deepspeed.zero_stage` 0 (DeepSpeed's ZeRO takes "
        "Adam-family optimisers)",
    )
    momentum: float = Field(
        0.9, ge=0, lt=1, description="`sgd`: momentum, unless the space samples `optim.momentum`"
    )
    nesterov: bool = Field(False, description="`sgd`: Nesterov momentum")
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="`adam`, `adamw`: the moving averages' coefficients"
    )


class ScheduleSpec(_Strict):
    """The learning rate's schedule, stepped after every optimiser step over a trial's
    epochs (a stage's or an incremental task's own), with an optional linear warm-up."""

    name: Literal["constant", "poly", "cosine", "step"] = Field(
        "constant",
        description="`poly`: `(1 - p)^power` of the progress `p` after warm-up; `cosine`: "
        "`(1 + cos πp) / 2`; `step`: times `gamma` every `step_epochs` epochs",
    )
    power: float = Field(0.9, gt=0, description="`poly`: the exponent")
    step_epochs: int = Field(30, ge=1, description="`step`: epochs between two decays")
    gamma: float = Field(0.1, gt=0, le=1, description="`step`: the factor of each decay")
    warmup_epochs: float = Field(
        0.0, ge=0, description="linear warm-up from the first step, in epochs (rounded to steps)"
    )
    warmup_steps: int = Field(0, ge=0, description="linear warm-up in steps, in place of epochs")

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleSpec:
        if self.warmup_epochs and self.warmup_steps:
            raise ValueError("give warmup_epochs or warmup_steps, not both")
        return self


class StudySpec(_Strict):
    """A study: the data, the tasks, the architecture, what is searched and how."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        max_length=128,
        description="the study's folder under `results`",
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="the first seed (repeats take the next ones); synthetic data are drawn from it",
    )
    dataset: DatasetSpec = Field(DatasetSpec(), description="the images and their labels")
    tasks: list[str] = Field(
        min_length=1, max_length=32, description="the tasks trained, each labelled by the dataset"
    )
    architecture: str = Field(
        "hard_sharing",
        description="the architecture, such as `hard_sharing`, `vmm`, `rcm_resnet`; "
        "with `architectures`, the single-task baselines' one (Δm's reference)",
    )
    model: dict[str, ModelArg] = Field(
        {},
        max_length=64,
        description="fixed model arguments (e.g. `backbone`); a fixed one is not searched",
    )
    architectures: dict[str, dict[str, ModelArg]] | None = Field(
        None,
        max_length=32,
        description="architectures searched jointly with the methods, each with its own "
        "fixed model arguments in place of `model`",
    )
    baseline_model: dict[str, ModelArg] = Field(
        {},
        max_length=64,
        description="model arguments of the single-task baselines only, over `model` "
        "(e.g. `{variant: conv}`); baselines are matched on them",
    )
    methods: list[str] | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="the balancing methods searched (null: all in the space)",
    )
    gradient_space: Literal["params", "representation"] = Field(
        "params",
        description="where gradient-level methods take task gradients: the shared parameters "
        "(exact) or the shared features (MGDA-UB style, cheaper)",
    )
    potentials: dict[str, float] | None = Field(
        None,
        description="`{task: KPI}` single-task potentials in (0, 1] for `amtl*`; tasks left "
        "out come from the store's best single-task trial",
    )
    search_space: PathText = Field(
        "default", description="a built-in space's name, or a YAML path relative to the spec"
    )
    trials: int = Field(
        8,
        ge=1,
        le=MAX_TRIALS,
        description="configurations the sampler proposes; each runs `repeats` times",
    )
    repeats: int = Field(
        1,
        ge=1,
        le=100,
        description="seeds per configuration (`seed`, `seed + 1`, …); the sampler is told "
        "their mean; needs scheduler `fifo`",
    )
    objectives: tuple[ObjectiveSpec, ...] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="what the search optimises; several make a Pareto front and need "
        "scheduler `fifo` (null: Δm, or the validation loss without baselines)",
    )
    constraints: tuple[ConstraintSpec, ...] = Field(
        (),
        max_length=16,
        description="caps on reported metrics; trials outside them are infeasible",
    )
    concurrency: int = Field(2, ge=1, le=MAX_WORKERS, description="trials at a time")
    cpus_per_trial: float = Field(
        1.0, gt=0, le=MAX_WORKERS, description="CPUs per trial (per worker)"
    )
    workers_per_trial: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="data-parallel workers per trial (Ray Train with DeepSpeed at that world "
        "size); 1 trains in the trial's own process",
    )
    gpus_per_worker: float = Field(
        0.0,
        ge=0,
        le=64,
        allow_inf_nan=False,
        description="GPUs Ray gives each worker (the trial's own process when "
        "`workers_per_trial` is 1); a fraction below 1 shares a GPU, above 1 a whole number; "
        "0 trains on CPUs",
    )
    sampler: SamplerSpec = Field(SamplerSpec(), description="how Optuna proposes trials")
    warm_start: bool = Field(
        False,
        description="first run each method at the space's defaults (the papers' settings), "
        "one trial each",
    )
    scheduler: SchedulerSpec = Field(SchedulerSpec(), description="early stopping")
    epochs: int = Field(
        5,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs of a trial; with `incremental`, of each task in turn",
    )
    incremental: bool = Field(
        False,
        description="train the tasks one after another, earlier ones frozen "
        "(architectures with `add_task`, such as `rcm_resnet`)",
    )
    stages: tuple[StageSpec, ...] | None = Field(
        None,
        max_length=256,
        description="staged training (`vit_sharing`): the base task, then each sub-task's steps",
    )
    batch_size: int = Field(32, ge=1, le=65_536, description="samples per batch (per worker)")
    baselines: Literal["auto", "store", "none"] = Field(
        "auto",
        description="Δm's single-task baselines: `auto` takes them from the store and trains "
        "missing ones first, `store` requires them there, `none` optimises `val_loss`",
    )
    deepspeed: DeepSpeedSpec = Field(DeepSpeedSpec(), description="DeepSpeed's settings")
    optimizer: OptimizerSpec = Field(
        OptimizerSpec(), description="the optimiser; its searched numbers are the space's `optim`"
    )
    schedule: ScheduleSpec = Field(
        ScheduleSpec(), description="the learning-rate schedule (default: constant)"
    )
    gradient_clip: float | None = Field(
        None,
        gt=0,
        description="clip the gradients' global norm to this before each step (null: no "
        "clipping); runs with `deepspeed.zero_stage` 0",
    )
    max_failures: int = Field(
        1, ge=0, le=MAX_TRIALS, description="restarts of a failed trial from a checkpoint"
    )
    results: PathText = Field(
        "results", description="the results root: a folder or an object-store URI (`s3://…`)"
    )
    compact_on_finish: bool = Field(
        True,
        description="when the study ends, merge its per-trial files into a few large ones "
        "(`mtlstudy compact`): faster queries, the same rows",
    )

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus_ray_can_give(cls, gpus: float) -> float:
        # A share of one GPU, or whole ones: Ray counts shares in steps of 0.0001, and a
        # GPU and a half is no device a worker can train on.
        if gpus > 1 and not gpus.is_integer():
            raise ValueError(f"{gpus:g} GPUs; above 1, expected a whole number")
        if round(gpus, 4) != gpus:
            raise ValueError(f"{gpus:g} GPUs; expected a share of at most 4 decimals")
        return gpus

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

    @model_validator(mode="after")
    def _recipe_on_zero(self) -> StudySpec:
        # ZeRO moves gradients out of the parameters before the step, where clip_grad_norm_
        # would look, and DeepSpeed refuses optimisers outside the Adam family under it.
        if self.deepspeed.zero_stage > 0:
            if self.gradient_clip is not None:
                raise ValueError("gradient_clip runs with deepspeed.zero_stage 0")
            if self.optimizer.name == "sgd":
                raise ValueError("optimizer sgd runs with deepspeed.zero_stage 0")
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
