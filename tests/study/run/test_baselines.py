"""Δm's baselines: the best single-task trial of the same data and architecture."""

from pathlib import Path

import pytest

from study.errors import UserError
from study.run import find_baselines
from study.spec import StudySpec
from study.store import write_trial

SPEC = StudySpec(name="mine", tasks=["semseg", "depth"])


def _row(trial_id: str, task: str, metrics: dict[str, float], **overrides: object) -> dict:
    row = {
        "trial_id": trial_id,
        "status": "completed",
        "kind": "single_task",
        "architecture": "hard_sharing",
        "dataset": "synthetic",
        "dataset_key": SPEC.dataset_key,
        "tasks": [task],
        "final": {task: metrics},
    }
    return {**row, **overrides}


DEPTH = {"rmse": 1.0, "abs_rel": 0.3, "log_rmse": 0.4, "delta1": 0.5, "delta2": 0.7, "delta3": 0.9}


def test_best_by_headline_metric_with_its_direction(tmp_path: Path) -> None:
    write_trial(tmp_path, "a", _row("s1", "semseg", {"miou": 0.4, "pixel_acc": 0.8}))
    write_trial(tmp_path, "b", _row("s2", "semseg", {"miou": 0.6, "pixel_acc": 0.7}))
    write_trial(tmp_path, "a", _row("d1", "depth", {**DEPTH, "rmse": 0.8}))
    write_trial(tmp_path, "b", _row("d2", "depth", {**DEPTH, "rmse": 0.5, "delta1": 0.0}))
    write_trial(tmp_path, "b", _row("d3", "depth", {**DEPTH, "rmse": 0.1}, architecture="vmm"))
    other = StudySpec(name="x", tasks=["depth"], seed=9).dataset_key
    write_trial(tmp_path, "b", _row("d4", "depth", {**DEPTH, "rmse": 0.2}, dataset_key=other))
    found = find_baselines(tmp_path, SPEC)
    assert found.trials == {"semseg": "s2", "depth": "d2"}  # rmse: lower is better
    assert found.metrics["semseg"] == {"miou": 0.6, "pixel_acc": 0.7}
    assert "delta1" not in found.metrics["depth"]  # Δm against 0 is undefined
    assert found.missing(["semseg", "depth", "normals"]) == ["normals"]


def test_an_all_zero_baseline_is_one_clear_error(tmp_path: Path) -> None:
    assert find_baselines(tmp_path, SPEC).trials == {}
    write_trial(tmp_path, "a", _row("s1", "semseg", {"miou": 0.0, "pixel_acc": 0.0}))
    with pytest.raises(UserError, match="baseline s1 of 'semseg' has no non-zero metric"):
        find_baselines(tmp_path, SPEC)


def test_a_baseline_scored_under_another_protocol_is_not_used(tmp_path: Path) -> None:
    spec = StudySpec(name="mine", tasks=["semseg", "edges", "depth"])
    capped = spec.model_copy(update={"metrics": spec.metrics.model_copy(update={"max_depth": 5})})
    assert spec.metrics_key == "edges=bsds:0.0075:19"
    assert capped.metrics_key == "edges=bsds:0.0075:19;depth=max_depth:5"
    # Before the key was recorded: semseg's scores had no options, edges' another protocol.
    write_trial(tmp_path, "old", _row("s0", "semseg", {"miou": 0.5, "pixel_acc": 0.8}))
    write_trial(tmp_path, "old", _row("e0", "edges", {"odsf": 0.9}))
    write_trial(tmp_path, "a", _row("e1", "edges", {"odsf": 0.7}, metrics_key="edges=bsds:0.01:19"))
    write_trial(tmp_path, "a", _row("e2", "edges", {"odsf": 0.4}, metrics_key=spec.metrics_key))
    write_trial(tmp_path, "a", _row("d1", "depth", DEPTH, metrics_key=spec.metrics_key))
    found = find_baselines(tmp_path, spec)
    assert found.trials == {"semseg": "s0", "edges": "e2", "depth": "d1"}
    # Capped depth scores are another protocol: the uncapped baseline does not serve.
    assert find_baselines(tmp_path, capped).trials == {"semseg": "s0", "edges": "e2"}
