"""The study spec: YAML validated as typed data, before Ray starts."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from models import balancing, list_models, list_tasks
from study.spec._base import (
    MAX_EPOCHS,
    MAX_LOADER_WORKERS,
    MAX_SEED,
    MAX_TRIALS,
    MAX_WORKERS,
    TOKEN_ARCHITECTURES,
    ModelArg,
    PathText,
    _Strict,
    unknown_names,
)
from study.spec._dataset import DatasetSpec
from study.spec._objectives import ConstraintSpec, ObjectiveSpec
from study.spec._training import (
    DeepSpeedSpec,
    MetricsSpec,
    OptimizerSpec,
    SamplerSpec,
    SchedulerSpec,
    ScheduleSpec,
    SearchStorage,
    StageSpec,
)


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
    metrics: MetricsSpec = Field(
        MetricsSpec(), description="how the tasks are scored: detection's and edges' protocols"
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
    loader_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="processes decoding a dataset on disk, per worker (null: "
        "`cpus_per_trial` − 1, at most 8; 0 decodes in the training process)",
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
    search_storage: SearchStorage = Field(
        "journal",
        description="where Optuna keeps the search's history: `journal` (the study's "
        "`optuna.journal` file), an SQL database (`sqlite:///PATH`, `postgresql://USER@HOST/DB`) "
        "or Redis (`redis://HOST:PORT/N`); no password in the URL: PGPASSWORD or ~/.pgpass "
        "for postgresql, MTLSTUDY_REDIS_PASSWORD for redis",
    )
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
        "clipping); DeepSpeed clips, at every `deepspeed.zero_stage`",
    )
    channels_last: bool | None = Field(
        None,
        description="convolutional architectures train with channels-last (NHWC) inputs and "
        "weights (the inputs alone under ZeRO, whose flat buffers hold the weights), which "
        "GPUs convolve faster (null: on when the trial has a GPU); `vit_sharing` ignores it",
    )
    cudnn_benchmark: bool = Field(
        True,
        description="on a GPU, cuDNN times its convolution algorithms on the first batches "
        "and keeps the fastest (faster, not bit-reproducible); no effect on CPUs",
    )
    max_failures: int = Field(
        1, ge=0, le=MAX_TRIALS, description="restarts of a failed trial from a checkpoint"
    )
    checkpoint_every: int | None = Field(
        None,
        ge=1,
        le=MAX_EPOCHS,
        description="epochs between a trial's checkpoints, and its last epoch (null: at the "
        "scheduler's rungs, every epoch under `hyperband`, which pauses trials, at least "
        "every quarter of the epochs, and the last)",
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
    def _precision_on_devices(self) -> StudySpec:
        # DeepSpeed's CPU accelerator refuses fp16 where oneDNN has no fp16 kernels (most CPUs).
        if self.deepspeed.precision == "fp16" and self.gpus_per_worker == 0:
            raise ValueError("fp16 needs GPUs (gpus_per_worker > 0); use bf16 or fp32 on the CPU")
        return self

    @model_validator(mode="after")
    def _channels_last_has_convolutions(self) -> StudySpec:
        trained = {*self.searched_architectures, self.architecture}
        if self.channels_last and trained <= TOKEN_ARCHITECTURES:
            raise ValueError(
                f"channels_last: true, but {', '.join(sorted(trained))} runs a transformer on "
                "tokens, which channels_last does not speed up; remove channels_last"
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

    @property
    def loader_worker_count(self) -> int:
        """Processes decoding a dataset on disk: ``loader_workers``, or the trial's CPUs
        but the one that trains."""
        if self.loader_workers is not None:
            return self.loader_workers
        return max(0, min(MAX_LOADER_WORKERS, int(self.cpus_per_trial) - 1))

    def stage_epochs(self, stage: StageSpec) -> int:
        return stage.epochs or self.epochs

    @property
    def metrics_key(self) -> str:
        """``task=protocol`` for each of the spec's tasks whose scores depend on a metric
        option (``;``-separated; see :meth:`MetricsSpec.task_protocol`)."""
        options = self.metrics.for_dataset(self.dataset)
        protocols = ((t, options.task_protocol(t)) for t in self.tasks)
        return ";".join(f"{t}={p}" for t, p in protocols if p)

    @property
    def dataset_key(self) -> str:
        """Names the data itself: trials with equal keys saw the same images and labels."""
        d = self.dataset
        if d.name != "synthetic":
            # Scores at the images' own resolution are not those at the training size.
            native = ":native-eval" if d.eval_resolution == "native" else ""
            return f"{d.name}:{d.root}:{d.image_size}px{native}"
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
