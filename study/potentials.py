"""Single-task potentials for achievement-based balancing: from the spec, else the store."""

from __future__ import annotations

import math
from pathlib import Path

from models import balancing, get_task
from search_spaces import SearchSpace
from study.errors import UserError
from study.spec import StudySpec
from study.store import load_trials

__all__ = ["needs_potentials", "resolve_potentials", "stored_potentials"]


def needs_potentials(space: SearchSpace) -> list[str]:
    """The space's methods that read single-task potentials (AMTL and its combinations)."""
    return [m for m in space.methods if "potentials" in balancing.defaults(m)]


def stored_potentials(root: Path, spec: StudySpec) -> dict[str, float]:
    """Each task's best single-task KPI in the results store, for this dataset and
    architecture, over every study there; tasks without one are left out."""
    try:
        trials = load_trials(root, where="kind == 'single_task' and status == 'completed'")
    except FileNotFoundError:
        return {}
    trials = trials[
        (trials["dataset"] == spec.dataset.name) & (trials["architecture"] == spec.architecture)
    ]
    found: dict[str, float] = {}
    for task in spec.tasks:
        column = f"final.{task}.{get_task(task, spec.dataset.num_classes).kpi}"
        if column not in trials:
            continue
        alone = trials["tasks"].map(lambda names, t=task: list(names) == [t])
        values = [v for v in trials.loc[alone, column] if math.isfinite(v) and 0 < v <= 1]
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
            "spec's 'potentials' (task: KPI in (0, 1]) or train single-task references "
            f"({spec.dataset.name}, {spec.architecture}) into {root}"
        )
    return {t: potentials[t] for t in spec.tasks}
