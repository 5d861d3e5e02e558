"""Declarative search spaces (YAML) and the Optuna define-by-run function they make.

A space file has up to three groups of parameters::

    optim:   {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 3.0e-3}}
    model:   {head_channels: {type: categorical, choices: [16, 32], default: 32}}
    methods: {ew: {}, dwa: {temperature: {type: float, low: 1, high: 4, default: 2}}}

A trial samples ``method`` among the methods, then that method's own parameters,
so the space is conditional. Parameter names are ``group/name`` (``dwa/temperature``),
which Ray Tune turns into nested configs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models import balancing
from search_spaces._yaml import read_model, short_repr

if TYPE_CHECKING:  # a trial builds its space's config without importing Optuna
    import optuna

__all__ = ["OPTIM_PARAMS", "SearchSpace", "SearchSpaceError", "builtin_space_path", "load_space"]

#: What a space's ``optim`` section may sample; the optimiser itself is the spec's choice
#: (``momentum`` is SGD's alone).
OPTIM_PARAMS: tuple[str, ...] = ("lr", "weight_decay", "momentum")

_BUILTIN = Path(__file__).parent


class SearchSpaceError(ValueError):
    """A search space file that cannot be used; the message is one line."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _RangeParam(_Strict):
    """A numeric range; subclasses fix the number type and the Optuna call."""

    low: float
    high: float
    log: bool = False
    default: float

    @model_validator(mode="after")
    def _check(self) -> _RangeParam:
        if not self.low <= self.default <= self.high:
            raise ValueError(f"default {self.default} is outside [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        return self


class FloatParam(_RangeParam):
    type: Literal["float"]

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class IntParam(_RangeParam):
    type: Literal["int"]
    low: int
    high: int
    default: int

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[str | int | float | bool] = Field(min_length=1)
    default: str | int | float | bool

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if self.default not in self.choices:
            raise ValueError(f"default {self.default!r} is not one of {self.choices}")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _optim_names(optim: dict[str, Param]) -> dict[str, Param]:
    unknown = sorted(set(optim) - set(OPTIM_PARAMS))
    if unknown:
        raise ValueError(f"optim samples no {unknown}; expected some of {list(OPTIM_PARAMS)}")
    return optim


class SpaceOverride(_Strict):
    """Ranges that replace some of a space's ``optim``/``model`` parameters (one stage of
    a staged study may train best at other rates than the rest)."""

    optim: dict[str, Param] = {}
    model: dict[str, Param] = {}


class SearchSpace(_Strict):
    optim: dict[str, Param] = {}
    model: dict[str, Param] = {}
    methods: dict[str, dict[str, Param]] = Field(min_length=1)
    #: Architectures a study searches jointly (sampled as ``architecture``); set by the
    #: study, not the file, since each comes with the spec's model arguments.
    architectures: list[str] = []

    @field_validator("optim")
    @classmethod
    def _known_optim(cls, optim: dict[str, Param]) -> dict[str, Param]:
        return _optim_names(optim)

    @model_validator(mode="after")
    def _check_methods(self) -> SearchSpace:
        known = balancing.list_methods()
        for method, params in self.methods.items():
            if method not in known:
                raise ValueError(f"unknown balancing method {method!r}; expected one of {known}")
            unknown = sorted(set(params) - set(balancing.defaults(method)))
            if unknown:
                raise ValueError(
                    f"method {method!r} has no hyperparameter(s) {unknown}; "
                    f"expected some of {sorted(balancing.defaults(method))}"
                )
        return self

    def restricted_to(self, methods: Sequence[str]) -> SearchSpace:
        """The same space sampling only ``methods`` (a spec may narrow the choice)."""
        missing = [m for m in methods if m not in self.methods]
        if missing:
            raise SearchSpaceError(
                f"method(s) {missing} are not in the search space; it has {sorted(self.methods)}"
            )
        return self.model_copy(update={"methods": {m: self.methods[m] for m in methods}})

    def overridden(self, override: SpaceOverride) -> SearchSpace:
        """The same space with ``override``'s parameters in place of its own; each must be
        one the space already tunes."""
        for group in ("optim", "model"):
            unknown = sorted(set(getattr(override, group)) - set(getattr(self, group)))
            if unknown:
                raise SearchSpaceError(
                    f"{group} parameter(s) {unknown} are not in the search space; it tunes "
                    f"{sorted(getattr(self, group))}"
                )
        return self.model_copy(
            update={
                "optim": {**self.optim, **override.optim},
                "model": {**self.model, **override.model},
            }
        )

    def define_by_run(self) -> Callable[[optuna.Trial], None]:
        """The Optuna define-by-run function that samples one configuration (picklable)."""
        return _DefineByRun(self)

    def grid(self) -> dict[str, list[Any]]:
        """Optuna's grid: every method and categorical choice, numbers at their defaults.

        Keys are the define-by-run names (``optim/lr``, ``method``, ``dwa/temperature``).
        """
        grid: dict[str, list[Any]] = {}
        for group in ("optim", "model"):
            for name, param in getattr(self, group).items():
                grid[f"{group}/{name}"] = _grid_values(param)
        grid["method"] = list(self.methods)
        if self.architectures:
            grid["architecture"] = list(self.architectures)
        for method, params in self.methods.items():
            for name, param in params.items():
                # One value per method parameter, so no method is run twice.
                grid[f"{method}/{name}"] = [param.default]
        return grid

    def default_points(self) -> list[dict[str, Any]]:
        """Each method (on each architecture searched) at every default, as define-by-run
        parameters (a warm start)."""
        shared = {
            f"{group}/{name}": param.default
            for group in ("optim", "model")
            for name, param in getattr(self, group).items()
        }
        architectures = [{"architecture": a} for a in self.architectures] or [{}]
        return [
            {
                **shared,
                **architecture,
                "method": method,
                **{f"{method}/{name}": p.default for name, p in params.items()},
            }
            for method, params in self.methods.items()
            for architecture in architectures
        ]

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def default_config(self, method: str) -> dict[str, Any]:
        """The nested configuration of every default value, for ``method``."""
        if method not in self.methods:
            raise SearchSpaceError(f"method {method!r} is not in the search space")
        return {
            "optim": {k: p.default for k, p in self.optim.items()},
            "model": {k: p.default for k, p in self.model.items()},
            "method": method,
            method: {k: p.default for k, p in self.methods[method].items()},
        }


def _grid_values(param: FloatParam | IntParam | CategoricalParam) -> list[Any]:
    return list(param.choices) if isinstance(param, CategoricalParam) else [param.default]


class _DefineByRun:
    # A class, not a closure: Ray Tune pickles its search algorithm into experiment state.
    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        space = self.space
        for group in ("optim", "model"):
            for name, param in getattr(space, group).items():
                param.suggest(trial, f"{group}/{name}")
        if space.architectures:
            trial.suggest_categorical("architecture", list(space.architectures))
        method = trial.suggest_categorical("method", list(space.methods))
        for name, param in space.methods[method].items():
            param.suggest(trial, f"{method}/{name}")


def builtin_space_path(name: str) -> Path:
    return _BUILTIN / f"{name}.yaml"


def load_space(path_or_name: str | Path) -> SearchSpace:
    """Read a search space from a YAML path, or a built-in space by name (``default``)."""
    path = Path(path_or_name)
    try:
        if not path.suffix and not path.exists():
            path = builtin_space_path(str(path_or_name))
    except OSError as err:  # a name too long for the filesystem, say
        raise SearchSpaceError(
            f"search space {short_repr(str(path_or_name))} cannot be read "
            f"({err.strerror or type(err).__name__}); expected a built-in name or a YAML file"
        ) from None
    return read_model(path, SearchSpace, SearchSpaceError, "search space")
