"""Single-task potentials for achievement-based balancing: from the spec, else the store."""

from __future__ import annotations

import math
from pathlib import Path

from models import balancing, get_task
from search_spaces import SearchSpace
from study.errors import UserError
from study.run._baselines import single_task_trials
from study.spec import StudySpec

__all__ = ["needs_potentials", "resolve_potentials", "stored_potentials"]


def needs_potentials(space: SearchSpace) -> list[str]:
    """The space's methods that read single-task potentials (AMTL and its combinations)."""
    return [m for m in space.methods if "potentials" in balancing.defaults(m)]


def stored_potentials(root: Path, spec: StudySpec) -> dict[str, float]:
    """Each task's best single-task KPI in the results store, for this data and
    architecture, over every study there; tasks without one are left out."""
    found: dict[str, float] = {}
    for task in spec.tasks:
        column = f"final.{task}.{get_task(task, spec.dataset.num_classes).kpi}"
        rows = single_task_trials(root, spec, task)
        if rows.empty or column not in rows:
            continue
        values = [v for v in rows[column] if math.isfinite(v) and 0 < v <= 1]
        if values:
            found[task] = max(values)
    return found


def resolve_potentials(root: Path, spec: StudySpec, space: SearchSpace) -> dict[str, float] | None:
    """The potentials the space's methods need, or None when none needs them.

    The spec's ``potentials`` win; the store fills in the rest. A task with neither is a
    :class:`UserError`.
    """
    methods = needs_potentials(space)
    if not methods:
        return None
    potentials = {**stored_potentials(root, spec), **(spec.potentials or {})}
    missing = [t for t in spec.tasks if t not in potentials]
    if missing:
        raise UserError(
            f"method(s) {methods} need single-task potentials for {missing}: give them in the "
            "spec's 'potentials' (task: KPI in (0, 1]) or train single-task baselines "
            f"({spec.dataset.name}, {spec.architecture}) into {root}"
        )
    return {t: potentials[t] for t in spec.tasks}
