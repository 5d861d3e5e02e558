"""Objectives and constraints: their arithmetic, and the spec refusing what cannot run
together, in one line naming the field, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.spec import (
    ConstraintSpec,
    ObjectiveSpec,
    SpecError,
    constraint_values,
    feasible,
    load_spec,
)

BASE = """
name: mo
tasks: [semseg, depth]
model: {backbone: regnetx_002}
methods: [ew, dwa]
"""


def _write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(BASE + extra)
    return path


def test_objective_directions_default_to_the_metric() -> None:
    assert ObjectiveSpec(metric="delta_m").direction == "max"
    assert ObjectiveSpec(metric="gflops").direction == "min"
    assert ObjectiveSpec(metric="gflops", mode="max").direction == "max"


def test_constraint_violations_are_zero_or_less_when_met() -> None:
    cap = ConstraintSpec(metric="gflops", max=2.0)
    band = ConstraintSpec(metric="params", min=10, max=20)
    assert cap.violation(1.5) == -0.5 and cap.violation(2.5) == 0.5
    assert band.violation(5) == 5 and band.violation(25) == 5 and band.violation(15) == -5
    assert constraint_values([cap, band], {"gflops": 1.0, "params": 12}) == {
        "gflops <= 2": -1.0,
        "10 <= params <= 20": -2.0,
    }
    assert constraint_values([cap], {"params": 1}) is None
    assert feasible([cap], {"gflops": 1.0}) is True
    assert feasible([cap], {"gflops": 3.0}) is False
    assert feasible([], {"gflops": 3.0}) is None


def test_a_two_objective_spec_with_constraints_and_repeats(tmp_path: Path) -> None:
    spec, space = load_spec(
        _write(
            tmp_path,
            "objectives: [{metric: delta_m}, {metric: gflops}]\n"
            "constraints: [{metric: params, max: 1.0e+7}]\n"
            "repeats: 3\nscheduler: {name: fifo}\nsampler: {name: nsga2}\n",
        )
    )
    assert spec.search_objectives == [("delta_m", "max"), ("gflops", "min")]
    assert spec.objective == ("delta_m", "max")
    assert spec.repeats == 3 and spec.constraints[0].max == 1e7


def test_architectures_are_searched_with_their_own_arguments(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: arch\ntasks: [semseg, depth]\nmethods: [ew, dwa]\ntrials: 4\n"
        "search_space: cross_architecture\n"
        "model: {backbone: regnetx_002}\n"
        "architectures:\n  hard_sharing: {backbone: regnetx_002}\n  rcm_resnet: {variant: rc}\n"
    )
    spec, space = load_spec(path)
    assert space.architectures == ["hard_sharing", "rcm_resnet"]
    assert spec.model_args("rcm_resnet") == {"variant": "rc"}
    assert {p["architecture"] for p in space.default_points()} == {"hard_sharing", "rcm_resnet"}
    assert space.grid()["architecture"] == ["hard_sharing", "rcm_resnet"]


@pytest.mark.parametrize(
    ("extra", "field", "expected"),
    [
        (
            "objectives: [{metric: delta_m}, {metric: gflops}]",
            "scheduler",
            "asha stops trials on one metric",
        ),
        ("repeats: 2\nscheduler: {name: median}", "scheduler", "biasing its mean"),
        ("objectives: [{metric: delta_m}]\nbaselines: none", "objectives", "baselines: auto"),
        (
            "objectives: [{metric: gflops}, {metric: gflops}]\nscheduler: {name: fifo}",
            "objectives",
            "listed twice",
        ),
        ("objectives: [{metric: accuracy}]", "objectives.0.metric", "'delta_m'"),
        ("objectives: []", "objectives", "at least 1"),
        ("constraints: [{metric: gflops}]", "constraints.0", "needs 'min' or 'max'"),
        ("constraints: [{metric: gflops, min: 3, max: 1}]", "constraints.0", "min 3.0 > max"),
        (
            "constraints: [{metric: gflops, max: 1}]\nsampler: {name: grid}\ntrials: 4",
            "constraints",
            "grid sampler",
        ),
        ("repeats: 0", "repeats", "greater than or equal to 1"),
        ("architectures: {vgg: {}}", "architectures", "unknown architecture 'vgg'"),
        (
            "architectures: {hard_sharing: {backbone: regnetx_002}, rcm_resnet: {}}",
            "architectures.rcm_resnet",
            "head_channels",
        ),
    ],
)
def test_refusals_name_the_field(tmp_path: Path, extra: str, field: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec(_write(tmp_path, extra))
    message = str(caught.value)
    assert f"field '{field}'" in message and expected in message
    assert "\n" not in message
