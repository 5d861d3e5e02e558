"""What a study optimises and caps: its objectives (one, or several for a Pareto front)
and its constraints, as spec fields and as the values trials report."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["METRICS", "ConstraintSpec", "ObjectiveSpec", "constraint_values", "feasible"]

#: What a trial reports that a study can optimise or cap, with its natural direction.
METRICS: dict[str, Literal["min", "max"]] = {
    "delta_m": "max",
    "val_loss": "min",
    "gflops": "min",
    "params": "min",
    "gflops_ratio": "min",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ObjectiveSpec(_Strict):
    """One objective: a reported metric and its direction (default: the metric's own)."""

    metric: Literal["delta_m", "val_loss", "gflops", "params", "gflops_ratio"] = Field(
        description="a metric every trial reports"
    )
    mode: Literal["min", "max"] | None = Field(
        None, description="minimise or maximise (null: the metric's own direction)"
    )

    @property
    def direction(self) -> Literal["min", "max"]:
        return self.mode or METRICS[self.metric]


class ConstraintSpec(_Strict):
    """A cap on a reported metric: a trial outside ``[min, max]`` is infeasible."""

    metric: Literal["delta_m", "val_loss", "gflops", "params", "gflops_ratio"] = Field(
        description="a metric every trial reports"
    )
    min: float | None = Field(None, description="the lowest feasible value")
    max: float | None = Field(None, description="the highest feasible value")

    @model_validator(mode="after")
    def _bounded(self) -> ConstraintSpec:
        if self.min is None and self.max is None:
            raise ValueError(f"constraint on {self.metric!r} needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"constraint on {self.metric!r} has min {self.min} > max {self.max}")
        return self

    @property
    def name(self) -> str:
        parts = [f"{self.min:g} <=" if self.min is not None else "", self.metric]
        parts.append(f"<= {self.max:g}" if self.max is not None else "")
        return " ".join(p for p in parts if p)

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bounds, as Optuna wants it (≤ 0: feasible)."""
        above = value - self.max if self.max is not None else -math.inf
        below = self.min - value if self.min is not None else -math.inf
        return max(above, below)


def constraint_values(
    constraints: Sequence[ConstraintSpec], result: Mapping[str, Any]
) -> dict[str, float] | None:
    """Each constraint's violation in ``result``; ``None`` when a metric is missing."""
    values = {}
    for constraint in constraints:
        value = result.get(constraint.metric)
        if value is None or not math.isfinite(float(value)):
            return None
        values[constraint.name] = constraint.violation(float(value))
    return values


def feasible(constraints: Sequence[ConstraintSpec], result: Mapping[str, Any]) -> bool | None:
    """Whether ``result`` meets every constraint (``None``: nothing to tell it by)."""
    if not constraints:
        return None
    values = constraint_values(constraints, result)
    return None if values is None else all(v <= 0 for v in values.values())
