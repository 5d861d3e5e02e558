"""How the spec trains and searches: scheduler, sampler, where Optuna keeps its history,
stages, DeepSpeed, optimiser, learning-rate schedule and how tasks are scored."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    model_validator,
)

from search_spaces import SpaceOverride
from study.optuna_storage import REDIS_PASSWORD_ENV
from study.spec._base import (
    MAX_EPOCHS,
    MAX_TRIALS,
    _Strict,
)
from study.spec._dataset import DatasetSpec


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


_SQL = re.compile(r"^(sqlite|postgresql)(\+[a-z0-9_]+)?$")
_STORAGE_FORMS = (
    "`journal`, `sqlite:///PATH`, `postgresql://USER@HOST:PORT/DB` or `redis://HOST:PORT/N`"
)


def _search_storage(storage: str) -> str:
    """``journal`` or a database URL without a password; messages never echo the URL."""
    if storage == "journal":
        return storage
    try:
        url = urlsplit(storage)
        password = url.password
    except ValueError:
        raise ValueError(f"expected {_STORAGE_FORMS}, got a malformed URL") from None
    scheme = url.scheme.lower()
    if not (_SQL.match(scheme) or scheme in ("redis", "rediss")):
        got = f"scheme {scheme[:30]!r}" if scheme else "no scheme"
        raise ValueError(f"expected {_STORAGE_FORMS}, got {got}")
    if password is not None or "password" in parse_qs(url.query):
        raise ValueError(
            "expected a URL without a password, got one; give it in the environment "
            f"instead: PGPASSWORD or ~/.pgpass for postgresql, {REDIS_PASSWORD_ENV} for redis"
        )
    if scheme.startswith("sqlite") and url.path in ("", "/"):
        raise ValueError(f"expected {_STORAGE_FORMS}, got an in-memory sqlite database")
    return storage


#: Where Optuna keeps the search's history (see :func:`study.optuna_storage.storage_kind`).
SearchStorage = Annotated[
    str, StringConstraints(min_length=1, max_length=2048), AfterValidator(_search_storage)
]


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
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="`bf16` runs with `zero_stage` 0 or 2; `fp16` (DeepSpeed's dynamic loss "
        "scaling: an overflowing step is skipped and the scale lowered) needs GPUs",
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
        description="the torch optimiser, at every `deepspeed.zero_stage`",
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


class MetricsSpec(_Strict):
    """How the tasks are scored: each benchmark's protocol, and its options.

    Detection's mAP is COCO's (`coco`: 101-point AP over IoU 0.50:0.95) or PASCAL VOC's at
    IoU 0.5 (`voc07`: 11-point; `voc12`: all-point); null picks `voc12` when the detection
    labels are VOC's and `coco` otherwise. Edges' odsF is the BSDS protocol: predictions
    thinned, matched one-to-one to ground-truth edge pixels within `edge_max_dist` × the
    image diagonal, at `edge_thresholds` thresholds. Depth is scored at every labelled pixel
    unless `max_depth` caps it.
    """

    detection_protocol: Literal["coco", "voc07", "voc12"] | None = Field(
        None,
        description="detection's mAP: `coco`, `voc07` or `voc12` (null: `voc12` on VOC, "
        "else `coco`)",
    )
    edge_max_dist: float = Field(
        0.0075,
        gt=0,
        le=1,
        description="edges: the matching distance as a fraction of the image diagonal "
        "(0.0075: ≈ 5.4 px at 512 × 512, under 1 px at 64 × 64, where only exact hits match)",
    )
    edge_thresholds: int = Field(
        19,
        ge=1,
        le=255,
        description="edges: probability thresholds k/(n + 1) swept for odsF; each thins and "
        "matches every image once per evaluation (BSDS sweeps 99)",
    )
    max_depth: float | None = Field(
        None,
        gt=0,
        description="depth: leave out pixels whose true depth is beyond this, in metres "
        "(e.g. 10 for NYUD; null: no cap)",
    )

    def task_protocol(self, task: str) -> str:
        """How ``task`` is scored, where an option changes its numbers ("" where none does):
        scores of a task are comparable only under equal protocols. Call it on options
        :meth:`for_dataset` resolved."""
        if task == "edges":
            return f"bsds:{self.edge_max_dist:g}:{self.edge_thresholds}"
        if task == "detection":
            return str(self.detection_protocol)
        if task == "depth" and self.max_depth is not None:
            return f"max_depth:{self.max_depth:g}"
        return ""

    def for_dataset(self, dataset: DatasetSpec) -> MetricsSpec:
        """These options with ``detection_protocol`` resolved for ``dataset``: `voc12` when
        detection is labelled by VOC (the dataset, or a part of a mix), else `coco`."""
        if self.detection_protocol is not None:
            return self
        if dataset.parts is None:
            sources = [dataset.name]
        else:
            sources = [p.name for p in dataset.parts if "detection" in p.tasks]
        protocol = "voc12" if "voc" in sources else "coco"
        return self.model_copy(update={"detection_protocol": protocol})
