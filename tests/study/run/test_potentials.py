"""AMTL's single-task potentials: the spec's, else the best single-task trial in the store."""

from pathlib import Path

import pytest

from search_spaces import load_space
from study.errors import UserError
from study.run import resolve_potentials, stored_potentials
from study.spec import StudySpec
from study.store import write_trial


def _single_task_row(trial_id: str, task: str, kpi: float, **overrides: object) -> dict:
    kpi_name = {"semseg": "miou", "depth": "delta1"}[task]
    row = {
        "trial_id": trial_id,
        "status": "completed",
        "kind": "single_task",
        "architecture": "hard_sharing",
        "dataset": "synthetic",
        "dataset_key": KEY,
        "tasks": [task],
        "final": {task: {kpi_name: kpi}},
    }
    return {**row, **overrides}


@pytest.fixture
def spec() -> StudySpec:
    return StudySpec(name="mine", tasks=["semseg", "depth"], baselines="none")


KEY = StudySpec(name="mine", tasks=["semseg"]).dataset_key


def test_best_single_task_trial_of_same_dataset_and_architecture(
    tmp_path: Path, spec: StudySpec
) -> None:
    write_trial(tmp_path, "older", _single_task_row("a", "semseg", 0.4))
    write_trial(tmp_path, "older", _single_task_row("b", "semseg", 0.6))
    write_trial(tmp_path, "other", _single_task_row("c", "semseg", 0.9, architecture="vmm"))
    write_trial(tmp_path, "other", _single_task_row("d", "depth", 0.95, status="error"))
    write_trial(tmp_path, "other", _single_task_row("e", "depth", 0.7))
    other_data = StudySpec(name="x", tasks=["depth"], seed=5).dataset_key
    write_trial(tmp_path, "other", _single_task_row("f", "depth", 0.9, dataset_key=other_data))
    assert stored_potentials(tmp_path, spec) == {"semseg": 0.6, "depth": 0.7}


def test_spec_potentials_win_and_missing_ones_are_one_clear_error(
    tmp_path: Path, spec: StudySpec
) -> None:
    amtl = load_space("default").restricted_to(["ew", "amtl"])
    write_trial(tmp_path, "older", _single_task_row("a", "semseg", 0.4))
    with pytest.raises(UserError, match=r"need single-task potentials for \['depth'\]"):
        resolve_potentials(tmp_path, spec, amtl)
    given = spec.model_copy(update={"potentials": {"depth": 0.5, "semseg": 0.55}})
    assert resolve_potentials(tmp_path, given, amtl) == {"semseg": 0.55, "depth": 0.5}
    assert resolve_potentials(tmp_path, spec, amtl.restricted_to(["ew"])) is None
